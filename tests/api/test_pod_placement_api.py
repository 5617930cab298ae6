"""Pod placement fields through the real API server, in process: on create
the server merges podAffinityTerm matchLabelKeys/mismatchLabelKeys into the
labelSelector (as upstream), and it rejects bad affinity terms and
topologySpreadConstraints with upstream's field paths and messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import _serve

PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web", "pod-template-hash": "abc", "tenant": "t1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


async def test_match_label_keys_are_merged_into_the_selector(api: TestClient) -> None:
    term = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname",
            "matchLabelKeys": ["pod-template-hash", "absent"], "mismatchLabelKeys": ["tenant"]}
    body = pod("p", affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [term],
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term}]}})
    resp = await api.post(PODS, json=body)
    assert resp.status == 201, await resp.text()
    anti = (await resp.json())["spec"]["affinity"]["podAntiAffinity"]
    want = [{"key": "pod-template-hash", "operator": "In", "values": ["abc"]},
            {"key": "tenant", "operator": "NotIn", "values": ["t1"]}]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchExpressions"] == want
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["matchLabelKeys"] == ["pod-template-hash", "absent"]
    pref = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert pref["labelSelector"]["matchExpressions"] == want


@pytest.mark.parametrize("spec,cause", [
    ({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {}, "topologyKey": "zone", "matchLabelKeys": ["k"], "mismatchLabelKeys": ["k"]}]}}},
     ("FieldValueInvalid", "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].matchLabelKeys[0]",
      'Invalid value: "k": exists in both matchLabelKeys and mismatchLabelKeys')),
    ({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "zone", "matchLabelKeys": ["k"]}]}}},
     ("FieldValueForbidden", "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].matchLabelKeys",
      "Forbidden: must not be specified when labelSelector is not set")),
    ({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]},
     ("FieldValueInvalid", "spec.topologySpreadConstraints[0].maxSkew", "Invalid value: 0: must be greater than zero")),
    ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                     "minDomains": 2}]},
     ("FieldValueInvalid", "spec.topologySpreadConstraints[0].minDomains",
      "Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway")),
    ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}]},
     ("FieldValueNotSupported", "spec.topologySpreadConstraints[0].whenUnsatisfiable", "Unsupported value")),
    ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                                    {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]},
     ("FieldValueDuplicate", "spec.topologySpreadConstraints[1].{topologyKey, whenUnsatisfiable}",
      'Duplicate value: "{zone, DoNotSchedule}"')),
])
async def test_invalid_placement_is_rejected(api: TestClient, spec: dict, cause: tuple[str, str, str]) -> None:
    resp = await api.post(PODS, json=pod("bad", **spec))
    body = await resp.json()
    assert resp.status == 422, body
    reason, field, message = cause
    got = [(c["reason"], c["field"], c["message"]) for c in body["details"]["causes"]]
    assert any(r == reason and f == field and message in m for r, f, m in got), got
