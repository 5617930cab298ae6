"""ControllerRevision history (kubepy.controllers.history) against the FakeAPI:
snapshot, reuse, renumber on rollback, collisions, truncation."""

from __future__ import annotations

import copy

import pytest

from kubepy.controllers import history
from kubepy.controllers.ownership import OwnerKind
from kubepy.testing.fakeapi import FakeAPI

DS = OwnerKind("apps/v1", "DaemonSet", "daemonsets")


def owner(image: str = "busybox:1.36", **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default", "uid": "uid-agent"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}


async def revisions(api: FakeAPI, o: dict) -> list[dict]:
    return history.owned_revisions(o, (await api.list("controllerrevisions", namespace="default"))["items"])


@pytest.fixture
async def api():
    return FakeAPI()


async def test_a_template_is_snapshotted_once(api):
    o = owner()
    h = await history.sync_history(api, o, DS, await revisions(api, o))
    assert h.update["revision"] == 1 and h.current is h.update
    assert h.update["data"]["spec"]["template"]["$patch"] == "replace"
    assert h.update["metadata"]["labels"] == {"app": "agent", "controller-revision-hash": h.update["metadata"]["name"].rsplit("-", 1)[1]}
    again = await history.sync_history(api, o, DS, await revisions(api, o))
    assert again.update["metadata"]["name"] == h.update["metadata"]["name"]
    assert len(await revisions(api, o)) == 1


async def test_the_owners_annotations_go_along_for_change_cause(api):
    o = owner()
    o["metadata"]["annotations"] = {"kubernetes.io/change-cause": "kubectl set image ds/agent c=busybox:1.36"}
    h = await history.sync_history(api, o, DS, await revisions(api, o))
    assert h.update["metadata"]["annotations"] == o["metadata"]["annotations"]


async def test_new_template_new_revision_and_rollback_renumbers(api):
    o1 = owner("busybox:1.36")
    r1 = (await history.sync_history(api, o1, DS, await revisions(api, o1))).update
    o2 = owner("busybox:1.37")
    h2 = await history.sync_history(api, o2, DS, await revisions(api, o2), current_name=r1["metadata"]["name"])
    assert h2.update["revision"] == 2 and h2.current["metadata"]["name"] == r1["metadata"]["name"]
    # back to the first template (kubectl rollout undo): revision 1 becomes 3, nothing new is made
    h3 = await history.sync_history(api, o1, DS, await revisions(api, o1))
    assert h3.update["metadata"]["name"] == r1["metadata"]["name"] and h3.update["revision"] == 3
    assert len(await revisions(api, o1)) == 2


async def test_a_hash_collision_bumps_the_collision_count(api):
    o = owner()
    data = history.revision_data(o)
    name = f"agent-{history.hash_revision(data, None)}"
    squatter = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": "default"}, "data": {"other": True}, "revision": 1}
    await api.create("controllerrevisions", squatter, namespace="default")
    h = await history.sync_history(api, o, DS, await revisions(api, o))
    assert h.collision_count == 1 and h.update["metadata"]["name"] != name
    assert h.update["metadata"]["name"] == f"agent-{history.hash_revision(data, 1)}"


async def test_history_is_truncated_to_the_limit_but_keeps_live_revisions(api):
    o = owner(revisionHistoryLimit=1)
    names = []
    for tag in ("1", "2", "3", "4"):
        oo = copy.deepcopy(o)
        oo["spec"]["template"]["spec"]["containers"][0]["image"] = f"busybox:{tag}"
        h = await history.sync_history(api, oo, DS, await revisions(api, oo))
        names.append(h.update["metadata"]["name"])
    deleted = await history.truncate_history(api, o, h, live={names[0]})
    # kept: the update (4), the live one (1), and one more (3) for the limit; 2 goes
    assert deleted == [names[1]]
    assert {r["metadata"]["name"] for r in await revisions(api, o)} == {names[0], names[2], names[3]}
