"""``KubeSchedulerConfiguration`` (``kubescheduler.config.k8s.io/v1``), as
``kube-scheduler --config`` reads it: profiles (one per ``schedulerName``),
which plugins run at which extension point with which score weights,
``pluginConfig`` args, ``percentageOfNodesToScore`` and the queue's backoff.

The plugin sets merge as upstream's v1 defaults do: the default plugins are
enabled at ``multiPoint``; ``multiPoint.disabled`` removes them (``*`` all);
a plugin enabled at a specific point runs there before the multiPoint ones
and its weight wins; ``disabled`` at a point removes it there only.  What
kubepy does not implement (other extension points' plugins, extenders,
leader election, args it does not know) is refused with a clear message,
never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME = "default-scheduler"

# name -> (extension points it implements, default score weight)
FILTER, SCORE, POST_FILTER, QUEUE_SORT, BIND, PRE_ENQUEUE = (
    "filter", "score", "postFilter", "queueSort", "bind", "preEnqueue")
PLUGINS: dict[str, tuple[frozenset[str], int]] = {
    "SchedulingGates": (frozenset({PRE_ENQUEUE}), 0),
    "PrioritySort": (frozenset({QUEUE_SORT}), 0),
    "NodeUnschedulable": (frozenset({FILTER}), 0),
    "NodeName": (frozenset({FILTER}), 0),
    "TaintToleration": (frozenset({FILTER, SCORE}), 3),
    "NodeReady": (frozenset({FILTER}), 0),   # kubepy's: not-ready nodes, where upstream relies on the taints alone
    "NodeAffinity": (frozenset({FILTER, SCORE}), 2),
    "NodePorts": (frozenset({FILTER}), 0),
    "NodeResourcesFit": (frozenset({FILTER, SCORE}), 1),
    "VolumeBinding": (frozenset({FILTER}), 0),
    "PodTopologySpread": (frozenset({FILTER, SCORE}), 2),
    "InterPodAffinity": (frozenset({FILTER, SCORE}), 2),
    "DefaultPreemption": (frozenset({POST_FILTER}), 0),
    "NodeResourcesBalancedAllocation": (frozenset({SCORE}), 1),
    "ImageLocality": (frozenset({SCORE}), 1),
    "DefaultBinder": (frozenset({BIND}), 0),
}
DEFAULT_PLUGINS = tuple(PLUGINS)  # upstream's defaults, in its order, all at multiPoint
# Points whose plugin lists kubepy applies; the pre-steps follow their main step.
POINTS = (PRE_ENQUEUE, QUEUE_SORT, FILTER, POST_FILTER, SCORE, BIND)
FOLLOWS = {"preFilter": FILTER, "preScore": SCORE}
UNSUPPORTED_POINTS = ("reserve", "permit", "preBind", "postBind")
MAX_WEIGHT = 100


class ConfigError(ValueError):
    """An invalid or unsupported scheduler configuration (one line, upstream's words where they exist)."""


@dataclass
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    filters: list[str] = field(default_factory=list)
    scores: list[tuple[str, int]] = field(default_factory=list)
    preemption: bool = True
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


@dataclass
class SchedulerConfig:
    profiles: list[Profile]
    percentage_of_nodes_to_score: int = 0
    kubeconfig: str | None = None
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    notes: list[str] = field(default_factory=list)  # accepted settings kubepy does not act on, for the log
    leader_election: Any = None   # a LeaderElectionConfig when leaderElection.leaderElect is true


def default_config() -> SchedulerConfig:
    return SchedulerConfig([_profile({}, 0)])


def load(path: str | Path) -> SchedulerConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML: {e}") from None
    return parse(doc)


def _leader_election(le: Mapping[str, Any]) -> Any:
    from kubepy.client.leaderelection import LeaderElectionConfig
    from kubepy.durations import parse_seconds

    if le.get("resourceLock", "leases") != "leases":
        raise ConfigError(f'leaderElection.resourceLock: Unsupported value: "{le["resourceLock"]}": '
                          f'supported values: "leases"')
    times = {}
    for key, attr, default in (("leaseDuration", "lease_duration", "15s"), ("renewDeadline", "renew_deadline", "10s"),
                               ("retryPeriod", "retry_period", "2s")):
        try:
            times[attr] = parse_seconds(str(le.get(key, default)))
        except ValueError as e:
            raise ConfigError(f"leaderElection.{key}: {e}") from None
    try:
        return LeaderElectionConfig(le.get("resourceName") or "kube-scheduler",
                                    namespace=le.get("resourceNamespace") or "kube-system", **times)
    except ValueError as e:
        raise ConfigError(f"leaderElection: {e}") from None


def _check_fields(obj: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path or 'configuration'}: must be an object")
    for key in obj:
        if key not in allowed:
            raise ConfigError(f'strict decoding error: unknown field "{path + "." if path else ""}{key}"')
    return obj


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: Invalid value: {value!r}: must be an integer")
    if not lo <= value <= hi:
        raise ConfigError(f"{path}: Invalid value: {value}: not in valid range [{lo}-{hi}]")
    return value


def parse(doc: Any) -> SchedulerConfig:
    top = _check_fields(doc, "", (
        "apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "percentageOfNodesToScore",
        "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders", "delayCacheUntilActive",
        "enableProfiling", "enableContentionProfiling"))
    if top.get("apiVersion") != API_VERSION or top.get("kind") != KIND:
        raise ConfigError(f"apiVersion and kind must be {API_VERSION}, {KIND} "
                          f"(got {top.get('apiVersion')!r}, {top.get('kind')!r})")
    cfg = SchedulerConfig([])
    if top.get("extenders"):
        raise ConfigError("extenders: kubepy's scheduler does not call scheduler extenders")
    le = _check_fields(top.get("leaderElection"), "leaderElection", (
        "leaderElect", "leaseDuration", "renewDeadline", "retryPeriod", "resourceLock", "resourceName",
        "resourceNamespace"))
    if le.get("leaderElect"):
        cfg.leader_election = _leader_election(le)
    cc = _check_fields(top.get("clientConnection"), "clientConnection", (
        "kubeconfig", "qps", "burst", "contentType", "acceptContentTypes"))
    cfg.kubeconfig = cc.get("kubeconfig") or None
    for key in ("qps", "burst", "contentType", "acceptContentTypes"):
        if key in cc:
            cfg.notes.append(f"clientConnection.{key} not applied: kubepy's client neither rate-limits nor "
                             f"negotiates content types")
    for key in ("parallelism", "enableProfiling", "enableContentionProfiling", "delayCacheUntilActive"):
        if key in top:
            cfg.notes.append(f"{key} not applied: kubepy's scheduler runs one pod at a time, in one process")
    if "percentageOfNodesToScore" in top:
        cfg.percentage_of_nodes_to_score = _int(top["percentageOfNodesToScore"], "percentageOfNodesToScore", 0, 100)
    if "podInitialBackoffSeconds" in top:
        cfg.pod_initial_backoff_seconds = _int(top["podInitialBackoffSeconds"], "podInitialBackoffSeconds", 1, 3600)
    if "podMaxBackoffSeconds" in top:
        cfg.pod_max_backoff_seconds = _int(top["podMaxBackoffSeconds"], "podMaxBackoffSeconds", 1, 3600)
    if cfg.pod_max_backoff_seconds < cfg.pod_initial_backoff_seconds:
        raise ConfigError(f"podMaxBackoffSeconds: Invalid value: {cfg.pod_max_backoff_seconds:g}: "
                          f"must be greater than or equal to PodInitialBackoffSeconds")
    profiles = top.get("profiles") or [{}]
    if not isinstance(profiles, list):
        raise ConfigError("profiles: must be a list")
    seen: set[str] = set()
    for i, p in enumerate(profiles):
        prof = _profile(p, i)
        if prof.scheduler_name in seen:
            raise ConfigError(f'profiles[{i}].schedulerName: Duplicate value: "{prof.scheduler_name}"')
        seen.add(prof.scheduler_name)
        cfg.profiles.append(prof)
    return cfg


def _profile(doc: Any, i: int) -> Profile:
    path = f"profiles[{i}]"
    p = _check_fields(doc, path, ("schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"))
    prof = Profile(scheduler_name=p.get("schedulerName", DEFAULT_SCHEDULER_NAME))
    if not prof.scheduler_name:
        raise ConfigError(f"{path}.schedulerName: Required value")
    if p.get("percentageOfNodesToScore") is not None:
        prof.percentage_of_nodes_to_score = _int(p["percentageOfNodesToScore"], f"{path}.percentageOfNodesToScore",
                                                 0, 100)
    points = _check_fields(p.get("plugins"), f"{path}.plugins",
                           ("multiPoint", *POINTS, *FOLLOWS, *UNSUPPORTED_POINTS))
    enabled = _merge(points, path)
    prof.filters = [n for n, _ in enabled[FILTER]]
    prof.scores = [(n, w) for n, w in enabled[SCORE]]
    prof.preemption = any(n == "DefaultPreemption" for n, _ in enabled[POST_FILTER])
    for required, point in (("PrioritySort", QUEUE_SORT), ("DefaultBinder", BIND), ("SchedulingGates", PRE_ENQUEUE)):
        if [n for n, _ in enabled[point]] != [required]:
            raise ConfigError(f"{path}.plugins.{point}: kubepy runs exactly {required} there")
    configs = p.get("pluginConfig") or []
    if not isinstance(configs, list):
        raise ConfigError(f"{path}.pluginConfig: must be a list")
    active = {n for names in enabled.values() for n, _ in names}
    for j, pc in enumerate(configs):
        pc = _check_fields(pc, f"{path}.pluginConfig[{j}]", ("name", "args"))
        name = pc.get("name")
        if name not in PLUGINS:
            raise ConfigError(f'{path}.pluginConfig[{j}].name: Invalid value: "{name}": plugin does not exist')
        if name in prof.args:
            raise ConfigError(f'{path}.pluginConfig[{j}].name: Duplicate value: "{name}"')
        if name not in active:
            raise ConfigError(f'{path}.pluginConfig[{j}]: args for "{name}", which is not enabled')
        args = dict(pc.get("args") or {})
        args.pop("apiVersion", None)
        args.pop("kind", None)
        _validate_args(name, args, f"{path}.pluginConfig[{j}].args")
        prof.args[name] = args
    return prof


def _entries(point: Any, path: str, key: str) -> list[tuple[str, int]]:
    out = []
    for k, entry in enumerate(point.get(key) or []):
        entry = _check_fields(entry, f"{path}.{key}[{k}]", ("name", "weight"))
        name = entry.get("name")
        if name != "*" and name not in PLUGINS:
            raise ConfigError(f'{path}.{key}[{k}].name: Invalid value: "{name}": plugin does not exist')
        weight = _int(entry.get("weight", 0), f"{path}.{key}[{k}].weight", 0, MAX_WEIGHT)
        out.append((name, weight))
    return out


def _merge(points: Mapping[str, Any], path: str) -> dict[str, list[tuple[str, int]]]:
    for point in UNSUPPORTED_POINTS:
        if points.get(point):
            raise ConfigError(f"{path}.plugins.{point}: kubepy's scheduler has no {point} extension point")
    multi = _check_fields(points.get("multiPoint"), f"{path}.plugins.multiPoint", ("enabled", "disabled"))
    m_disabled = {n for n, _ in _entries(multi, f"{path}.plugins.multiPoint", "disabled")}
    base = [] if "*" in m_disabled else [(n, 0) for n in DEFAULT_PLUGINS if n not in m_disabled]
    for name, weight in _entries(multi, f"{path}.plugins.multiPoint", "enabled"):
        if name == "*":
            raise ConfigError(f'{path}.plugins.multiPoint.enabled: Invalid value: "*"')
        base = [(n, w) for n, w in base if n != name] + [(name, weight)]
    result: dict[str, list[tuple[str, int]]] = {}
    specific: dict[str, tuple[list[tuple[str, int]], set[str]]] = {}
    for point in (*POINTS, *FOLLOWS):
        where = f"{path}.plugins.{point}"
        conf = _check_fields(points.get(point), where, ("enabled", "disabled"))
        enabled = _entries(conf, where, "enabled")
        disabled = {n for n, _ in _entries(conf, where, "disabled")}
        main = FOLLOWS.get(point, point)
        for name, _ in enabled:
            if name == "*":
                raise ConfigError(f'{where}.enabled: Invalid value: "*"')
            if main not in PLUGINS[name][0]:
                raise ConfigError(f'{where}.enabled: plugin "{name}" does not extend {point} plugin')
        specific[point] = (enabled, disabled)
    for pre, main in FOLLOWS.items():
        if specific[pre] != ([], set()) and specific[pre][1] != specific[main][1]:
            raise ConfigError(f"{path}.plugins.{pre}: kubepy runs {pre} with {main}; disable the same plugins "
                              f"at both (or only at {main})")
    for point in POINTS:
        enabled, disabled = specific[point]
        names = {n for n, _ in enabled}
        from_multi = [] if "*" in disabled else [
            (n, w) for n, w in base if point in PLUGINS[n][0] and n not in disabled and n not in names]
        merged = enabled + from_multi
        result[point] = [(n, (w or PLUGINS[n][1] or 1) if point == SCORE else 0) for n, w in merged]
    return result


def _validate_args(name: str, args: dict[str, Any], path: str) -> None:
    if name == "NodeResourcesFit":
        a = _check_fields(args, path, ("scoringStrategy", "ignoredResources", "ignoredResourceGroups"))
        if a.get("ignoredResources") or a.get("ignoredResourceGroups"):
            raise ConfigError(f"{path}.ignoredResources: kubepy's NodeResourcesFit does not ignore resources")
        s = _check_fields(a.get("scoringStrategy"), f"{path}.scoringStrategy",
                          ("type", "resources", "requestedToCapacityRatio"))
        kind = s.get("type", "LeastAllocated")
        if kind not in ("LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"):
            raise ConfigError(f'{path}.scoringStrategy.type: Unsupported value: "{kind}": supported values: '
                              f'"LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"')
        for k, r in enumerate(s.get("resources") or []):
            r = _check_fields(r, f"{path}.scoringStrategy.resources[{k}]", ("name", "weight"))
            if not r.get("name"):
                raise ConfigError(f"{path}.scoringStrategy.resources[{k}].name: Required value")
            _int(r.get("weight", 1), f"{path}.scoringStrategy.resources[{k}].weight", 1, 100)
        if kind == "RequestedToCapacityRatio":
            ratio = _check_fields(s.get("requestedToCapacityRatio"), f"{path}.scoringStrategy.requestedToCapacityRatio",
                                  ("shape",))
            shape = ratio.get("shape") or []
            if not shape:
                raise ConfigError(f"{path}.scoringStrategy.requestedToCapacityRatio.shape: Required value")
            last = -1
            for k, pt in enumerate(shape):
                where = f"{path}.scoringStrategy.requestedToCapacityRatio.shape[{k}]"
                pt = _check_fields(pt, where, ("utilization", "score"))
                u = _int(pt.get("utilization", 0), f"{where}.utilization", 0, 100)
                _int(pt.get("score", 0), f"{where}.score", 0, 10)
                if u <= last:
                    raise ConfigError(f"{where}.utilization: Invalid value: {u}: utilization values must be sorted "
                                      f"in increasing order")
                last = u
    elif name == "PodTopologySpread":
        a = _check_fields(args, path, ("defaultConstraints", "defaultingType"))
        dtype = a.get("defaultingType", "System")
        if dtype not in ("System", "List"):
            raise ConfigError(f'{path}.defaultingType: Unsupported value: "{dtype}": supported values: "List", "System"')
        constraints = a.get("defaultConstraints") or []
        if dtype == "System" and constraints:
            raise ConfigError(f'{path}.defaultConstraints: Invalid value: "...": when .defaultingType is "System", '
                              f'.defaultConstraints must be empty')
        for k, c in enumerate(constraints):
            where = f"{path}.defaultConstraints[{k}]"
            c = _check_fields(c, where, ("maxSkew", "topologyKey", "whenUnsatisfiable"))
            _int(c.get("maxSkew"), f"{where}.maxSkew", 1, 2**31 - 1)
            if not c.get("topologyKey"):
                raise ConfigError(f"{where}.topologyKey: Required value: can not be empty")
            if c.get("whenUnsatisfiable") not in ("DoNotSchedule", "ScheduleAnyway"):
                raise ConfigError(f'{where}.whenUnsatisfiable: Unsupported value: "{c.get("whenUnsatisfiable")}": '
                                  f'supported values: "DoNotSchedule", "ScheduleAnyway"')
    elif name == "InterPodAffinity":
        a = _check_fields(args, path, ("hardPodAffinityWeight", "ignorePreferredTermsOfExistingPods"))
        if "hardPodAffinityWeight" in a:
            _int(a["hardPodAffinityWeight"], f"{path}.hardPodAffinityWeight", 0, 100)
    elif args:
        raise ConfigError(f'{path}: kubepy\'s "{name}" takes no args (got {", ".join(sorted(args))})')


# -- building a profile's plugins ------------------------------------------------

def build_plugins(profile: Profile, *, listers: Any, volume_binding: Any) -> tuple[list[Any], list[tuple[Any, int]]]:
    """The profile's filter plugins and (scorer, weight) pairs, one instance per plugin
    shared by both points.  *volume_binding* is the VolumeBinding filter the scheduler made."""
    from kubepy.scheduler import plugins
    from kubepy.scheduler.interpodaffinity import InterPodAffinity
    from kubepy.scheduler.topologyspread import DEFAULT_CONSTRAINTS, PodTopologySpread

    made: dict[str, Any] = {}

    def make(name: str) -> Any:
        if name in made:
            return made[name]
        args = profile.args.get(name, {})
        if name == "PodTopologySpread":
            if args.get("defaultingType", "System") == "System":
                defaults: Sequence[tuple[int, str, str]] = DEFAULT_CONSTRAINTS
            else:
                defaults = [(c["maxSkew"], c["topologyKey"], c["whenUnsatisfiable"])
                            for c in args.get("defaultConstraints") or []]
            plugin: Any = PodTopologySpread(listers, defaults)
        elif name == "InterPodAffinity":
            plugin = InterPodAffinity(listers, hard_pod_affinity_weight=args.get("hardPodAffinityWeight", 1),
                                      ignore_preferred_terms_of_existing_pods=bool(
                                          args.get("ignorePreferredTermsOfExistingPods")))
        elif name == "VolumeBinding":
            plugin = volume_binding
        elif name == "NodeName":
            plugin = plugins.NodeName()
        else:
            plugin = getattr(plugins, name)()
        made[name] = plugin
        return plugin

    filters = [make(n) for n in profile.filters]
    scorers = []
    for name, weight in profile.scores:
        if name == "NodeResourcesFit":
            strategy = (profile.args.get(name) or {}).get("scoringStrategy") or {}
            resources = [(r["name"], r.get("weight", 1)) for r in strategy.get("resources") or []]
            shape = [(p.get("utilization", 0), p.get("score", 0) * 10)
                     for p in (strategy.get("requestedToCapacityRatio") or {}).get("shape") or []]
            scorers.append((plugins.NodeResourcesAllocated(strategy.get("type", "LeastAllocated"),
                                                           resources or (("cpu", 1), ("memory", 1)), shape), weight))
        else:
            scorers.append((make(name), weight))
    return filters, scorers
