"""KubeSchedulerConfiguration: how profiles, plugin sets, weights and args
merge (upstream's v1 rules), what is refused and with which words, and that a
configured profile really changes placement (in process, on the FakeAPI)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubepy.scheduler import config as sc
from kubepy.scheduler.framework import NodeInfo, schedule_one
from kubepy.scheduler.scheduler import Scheduler
from kubepy.testing.fakeapi import FakeAPI
from tests.scheduler.test_plugins import make_node, make_pod
from tests.scheduler.test_scheduler_placement import wait_for


def conf(*profiles: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"apiVersion": sc.API_VERSION, "kind": sc.KIND, **({"profiles": list(profiles)} if profiles else {}), **top}


class NoVolumes:
    name = "VolumeBinding"

    def filter(self, pod: Any, node_info: Any) -> Any:
        from kubepy.scheduler.framework import OK
        return OK


def built(profile: sc.Profile) -> tuple[list[Any], list[tuple[Any, int]]]:
    return sc.build_plugins(profile, listers=None, volume_binding=NoVolumes())


def test_the_default_profile_is_upstreams_default_plugin_set() -> None:
    cfg = sc.parse(conf())
    (prof,) = cfg.profiles
    assert prof.scheduler_name == "default-scheduler" and prof.preemption
    assert prof.filters == ["NodeUnschedulable", "NodeName", "TaintToleration", "NodeReady", "NodeAffinity",
                            "NodePorts", "NodeResourcesFit", "VolumeBinding", "PodTopologySpread", "InterPodAffinity"]
    assert dict(prof.scores) == {"TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1,
                                 "PodTopologySpread": 2, "InterPodAffinity": 2, "NodeResourcesBalancedAllocation": 1,
                                 "ImageLocality": 1}


def test_score_points_reweigh_and_disable() -> None:
    cfg = sc.parse(conf({"plugins": {
        "score": {"enabled": [{"name": "NodeResourcesFit", "weight": 5}], "disabled": [{"name": "ImageLocality"}]},
        "preScore": {"disabled": [{"name": "ImageLocality"}]}}}))
    scores = cfg.profiles[0].scores
    assert scores[0] == ("NodeResourcesFit", 5)          # a specific point runs before multiPoint's
    assert "ImageLocality" not in dict(scores) and dict(scores)["TaintToleration"] == 3
    assert "NodeResourcesFit" in cfg.profiles[0].filters  # disabled nowhere else


def test_multipoint_star_leaves_only_what_is_enabled() -> None:
    cfg = sc.parse(conf({"plugins": {"multiPoint": {
        "disabled": [{"name": "*"}],
        "enabled": [{"name": "PrioritySort"}, {"name": "SchedulingGates"}, {"name": "DefaultBinder"},
                    {"name": "NodeResourcesFit", "weight": 4}, {"name": "TaintToleration"}]}}}))
    prof = cfg.profiles[0]
    assert prof.filters == ["NodeResourcesFit", "TaintToleration"]
    assert prof.scores == [("NodeResourcesFit", 4), ("TaintToleration", 3)]   # weight 0 -> the plugin's default
    assert not prof.preemption


@pytest.mark.parametrize("doc,message", [
    ({"apiVersion": "kubescheduler.config.k8s.io/v1beta3", "kind": sc.KIND},
     "apiVersion and kind must be kubescheduler.config.k8s.io/v1, KubeSchedulerConfiguration"),
    (conf(bogus=1), 'strict decoding error: unknown field "bogus"'),
    (conf({"schedulerName": "a", "plugin": {}}), 'strict decoding error: unknown field "profiles[0].plugin"'),
    (conf(percentageOfNodesToScore=101), "percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100]"),
    (conf({"schedulerName": "a"}, {"schedulerName": "a"}), 'profiles[1].schedulerName: Duplicate value: "a"'),
    (conf({"schedulerName": ""}), "profiles[0].schedulerName: Required value"),
    (conf({"plugins": {"score": {"enabled": [{"name": "Nope"}]}}}),
     'profiles[0].plugins.score.enabled[0].name: Invalid value: "Nope": plugin does not exist'),
    (conf({"plugins": {"score": {"enabled": [{"name": "NodePorts"}]}}}),
     'profiles[0].plugins.score.enabled: plugin "NodePorts" does not extend score plugin'),
    (conf({"plugins": {"score": {"enabled": [{"name": "ImageLocality", "weight": 101}]}}}),
     "profiles[0].plugins.score.enabled[0].weight: Invalid value: 101: not in valid range [0-100]"),
    (conf({"plugins": {"permit": {"enabled": [{"name": "X"}]}}}),
     "profiles[0].plugins.permit: kubepy's scheduler has no permit extension point"),
    (conf(leaderElection={"leaderElect": True, "resourceLock": "endpoints"}),
     'leaderElection.resourceLock: Unsupported value: "endpoints"'),
    (conf(leaderElection={"leaderElect": True, "leaseDuration": "5s"}),
     "leaderElection: leaseDuration must be greater than renewDeadline"),
    (conf(leaderElection={"leaderElect": True, "retryPeriod": "soon"}), "leaderElection.retryPeriod: invalid duration"),
    (conf(extenders=[{"urlPrefix": "http://x"}]), "extenders: kubepy's scheduler does not call scheduler extenders"),
    (conf({"pluginConfig": [{"name": "PodTopologySpread", "args": {"defaultConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}}]}),
     'when .defaultingType is "System", .defaultConstraints must be empty'),
    (conf({"pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "Packed"}}}]}),
     'scoringStrategy.type: Unsupported value: "Packed"'),
    (conf({"pluginConfig": [{"name": "ImageLocality", "args": {"x": 1}}]}),
     "kubepy's \"ImageLocality\" takes no args (got x)"),
    (conf({"plugins": {"score": {"disabled": [{"name": "ImageLocality"}]}},
           "pluginConfig": [{"name": "ImageLocality", "args": {}}]}),
     "args for \"ImageLocality\", which is not enabled"),
    (conf({"plugins": {"preFilter": {"disabled": [{"name": "NodePorts"}]}}}),
     "profiles[0].plugins.preFilter: kubepy runs preFilter with filter"),
    (conf(podInitialBackoffSeconds=5, podMaxBackoffSeconds=2),
     "podMaxBackoffSeconds: Invalid value: 2: must be greater than or equal to PodInitialBackoffSeconds"),
])
def test_bad_configurations_are_refused_with_a_reason(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(sc.ConfigError) as err:
        sc.parse(doc)
    assert message in str(err.value)


def test_settings_kubepy_does_not_apply_are_noted_not_ignored() -> None:
    cfg = sc.parse(conf(clientConnection={"kubeconfig": "/etc/k.conf", "qps": 50}, parallelism=16))
    assert cfg.kubeconfig == "/etc/k.conf"
    assert any("clientConnection.qps" in n for n in cfg.notes) and any("parallelism" in n for n in cfg.notes)


def nodes_with_load() -> list[NodeInfo]:
    """n-busy already runs 3 cpu of 4; n-idle nothing."""
    busy = NodeInfo.from_node(make_node("n-busy"), [make_pod("old", cpu="3", memory="1Gi")])
    return [busy, NodeInfo.from_node(make_node("n-idle"))]


@pytest.mark.parametrize("strategy,want", [("LeastAllocated", "n-idle"), ("MostAllocated", "n-busy")])
def test_scoring_strategy_changes_the_choice(strategy: str, want: str) -> None:
    cfg = sc.parse(conf({"plugins": {"multiPoint": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]}},
                         "pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {
                             "type": strategy, "resources": [{"name": "cpu", "weight": 1}]}}}]}))
    filters, scorers = built(cfg.profiles[0])
    result = schedule_one(make_pod("new", cpu="500m"), nodes_with_load(), filters=filters, scorers=scorers)
    assert result.node == want
    why = result.why()
    assert why.startswith(f"score {result.scores[want]} of 2 feasible, 2 of 2 nodes examined: ")
    assert "NodeResourcesFit=" in why and "runner-up" in why


def test_requested_to_capacity_ratio_follows_its_shape() -> None:
    # Score rises with utilization up to 50 %, then falls: the busy node (87 % after) loses,
    # the idle one (12 %) scores 10 * 12/50 ... and wins.
    cfg = sc.parse(conf({"pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {
        "type": "RequestedToCapacityRatio", "resources": [{"name": "cpu", "weight": 1}],
        "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 50, "score": 10},
                                               {"utilization": 100, "score": 0}]}}}}]}))
    _, scorers = built(cfg.profiles[0])
    fit = next(p for p, _ in scorers if p.name == "NodeResourcesFit")
    assert [fit._fraction_score(r, 1000) for r in (0, 250, 500, 750, 1000)] == [0, 50, 100, 50, 0]


def test_list_default_constraints_can_be_hard() -> None:
    cfg = sc.parse(conf({"pluginConfig": [{"name": "PodTopologySpread", "args": {
        "defaultingType": "List",
        "defaultConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "DoNotSchedule"}]}}]}))
    filters, _ = built(cfg.profiles[0])
    spread = next(p for p in filters if p.name == "PodTopologySpread")
    assert spread.default_constraints == ((1, "kubernetes.io/hostname", "DoNotSchedule"),)


def test_without_default_preemption_the_message_has_no_preemption_part() -> None:
    assert not sc.parse(conf({"plugins": {"postFilter": {"disabled": [{"name": "DefaultPreemption"}]}}})).profiles[0].preemption


async def test_two_profiles_schedule_their_own_pods() -> None:
    api = FakeAPI(seed=2)
    api.seed("namespaces", {"metadata": {"name": "default"}})
    api.seed("nodes", {**make_node("n-busy"), "metadata": {"name": "n-busy", "labels": {}}})
    api.seed("nodes", {**make_node("n-idle"), "metadata": {"name": "n-idle", "labels": {}}})
    api.seed("pods", {**make_pod("old", cpu="3"), "spec": {**make_pod("old", cpu="3")["spec"], "nodeName": "n-busy"}})
    packing = {"schedulerName": "bin-packer", "plugins": {"score": {"disabled": [{"name": "*"}], "enabled": [
        {"name": "NodeResourcesFit"}]}}, "pluginConfig": [{"name": "NodeResourcesFit", "args": {
            "scoringStrategy": {"type": "MostAllocated"}}}]}
    cfg = sc.parse(conf({"schedulerName": "default-scheduler"}, packing))
    for name, scheduler_name in (("spread", None), ("packed", "bin-packer"), ("other", "someone-else")):
        p = make_pod(name, cpu="500m")
        if scheduler_name:
            p["spec"]["schedulerName"] = scheduler_name
        api.seed("pods", p)
    scheduler = Scheduler(api, config=cfg)
    task = asyncio.create_task(scheduler.run())
    try:
        def node_of(name: str) -> str | None:
            return next((p["spec"].get("nodeName") for p in api.objects("pods", "default")
                         if p["metadata"]["name"] == name), None)
        await wait_for(lambda: node_of("spread") and node_of("packed"))
        assert (node_of("spread"), node_of("packed")) == ("n-idle", "n-busy")
        await asyncio.sleep(0.3)
        assert node_of("other") is None      # no profile of ours: left to its own scheduler

        def scheduled_events() -> dict[str, dict]:
            return {e["involvedObject"]["name"]: e for e in api.objects("events", "default")
                    if e["reason"] == "Scheduled"}
        events = await wait_for(lambda: (ev := scheduled_events()) and len(ev) == 2 and ev)
        assert events["packed"]["source"]["component"] == "bin-packer"
        assert events["packed"]["message"].startswith("Successfully assigned default/packed to n-busy (score ")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()


def test_leader_election_from_the_file_and_the_flags() -> None:
    from kubepy.cli import build_parser, leader_election

    cfg = sc.parse(conf(leaderElection={"leaderElect": True, "leaseDuration": "30s", "renewDeadline": "20s",
                                        "resourceName": "my-scheduler"}))
    le = cfg.leader_election
    assert (le.name, le.namespace, le.lease_duration, le.renew_deadline, le.retry_period) == (
        "my-scheduler", "kube-system", 30.0, 20.0, 2.0)
    assert sc.parse(conf(leaderElection={"leaderElect": False})).leader_election is None
    args = build_parser().parse_args(["scheduler", "--kubeconfig", "k", "--leader-elect-retry-period", "3s"])
    assert leader_election(args, "kube-scheduler", le).retry_period == 3.0       # a flag overrides the file
    assert leader_election(args, "kube-scheduler") is None                        # off unless asked
    args = build_parser().parse_args(["scheduler", "--kubeconfig", "k", "--leader-elect"])
    assert leader_election(args, "kube-scheduler").name == "kube-scheduler"
