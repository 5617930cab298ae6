"""Job (batch/v1): the job controller runs its pods to completion.

As upstream's ``pkg/registry/batch/job/strategy.go`` and
``pkg/apis/batch/validation``: on create the selector is generated from the
Job's UID (unless ``manualSelector``) and the template gets the
``batch.kubernetes.io/controller-uid``/``job-name`` labels (and their legacy
forms); defaults as ``SetDefaults_Job``; the template must restart
``Never`` or ``OnFailure``; completions, selector, completionMode,
podFailurePolicy and the template are immutable (a suspended Job that never
started may still change its scheduling directives, and an Indexed Job may
change completions together with parallelism). The JobSpec rules are shared
with CronJob's ``jobTemplate``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

__all__ = ["JOB", "CONTROLLER_UID_LABEL", "JOB_NAME_LABEL", "LEGACY_CONTROLLER_UID_LABEL", "LEGACY_JOB_NAME_LABEL",
           "default_job_spec", "validate_job_spec", "job_status_word"]

CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"

MAX_INT32 = 2**31 - 1
MAX_INDEXED_COMPLETIONS = 100_000
MAX_POD_FAILURE_POLICY_RULES = 20
MAX_EXIT_CODE_VALUES = 255
MAX_SUCCESS_POLICY_RULES = 20
MAX_SUCCEEDED_INDEXES_LENGTH = 64 * 1024
_ATOI = re.compile(r"[+-]?[0-9]+")
COMPLETION_MODES = ("NonIndexed", "Indexed")
POD_REPLACEMENT_POLICIES = ("TerminatingOrFailed", "Failed")
POD_FAILURE_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
EXIT_CODE_OPERATORS = ("In", "NotIn")
CONDITION_STATUSES = ("True", "False", "Unknown")
# What a suspended Job that never started may still change in its template (upstream's
# JobMutableSchedulingDirectives).
_MUTABLE_SCHEDULING = ("nodeSelector", "affinity", "tolerations", "schedulingGates")


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


# -- defaults (SetDefaults_Job) --------------------------------------------------
def default_job_spec(spec: dict) -> None:
    """Kubernetes' JobSpec defaults, in place (a Job's, and a CronJob's job template's)."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
    for rule in _l(_d(spec.get("podFailurePolicy")).get("rules")):
        for pattern in _l(_d(rule).get("onPodConditions")):
            if isinstance(pattern, dict):
                pattern.setdefault("status", "True")
    v.default_template_spec(spec.get("template"))


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("manualSelector", False)
        default_job_spec(spec)


def _prepare_create(obj: dict) -> None:
    """Drop status; generate the selector and the template's labels from the Job's UID and name."""
    obj.pop("status", None)
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return
    meta = obj["metadata"]
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    tmeta = template.setdefault("metadata", {})
    if not isinstance(tmeta, dict):
        return
    labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    tmeta["labels"] = labels
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, meta["name"])  # a conflicting user label fails validation
    for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
        labels.setdefault(key, meta["uid"])
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    spec["selector"] = selector
    match = selector.get("matchLabels") if isinstance(selector.get("matchLabels"), dict) else {}
    selector["matchLabels"] = match
    match.setdefault(CONTROLLER_UID_LABEL, meta["uid"])


# -- validation --------------------------------------------------------------------
def _validate_generated_selector(obj: dict, errs: v.Errs) -> None:
    spec, meta = _d(obj.get("spec")), _d(obj.get("metadata"))
    if spec.get("manualSelector") is True or not isinstance(spec.get("selector"), dict):
        return
    if not meta.get("uid"):
        errs.required("metadata.uid")
    labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
    expected = {CONTROLLER_UID_LABEL: str(meta.get("uid") or ""), JOB_NAME_LABEL: str(meta.get("name") or "")}
    for key, want in ((LEGACY_CONTROLLER_UID_LABEL, expected[CONTROLLER_UID_LABEL]),
                      (LEGACY_JOB_NAME_LABEL, expected[JOB_NAME_LABEL]), *expected.items()):
        if key not in labels:
            errs.required(f"spec.template.metadata.labels[{key}]", f"must be '{want}'")
        elif labels[key] != want:
            errs.invalid(f"spec.template.metadata.labels[{key}]", labels[key], f"must be '{want}'")
    if not v.selector_matches(spec["selector"], expected):
        errs.invalid("spec.selector", spec["selector"], "`selector` not auto-generated")


def _validate_pod_failure_policy(spec: dict, path: str, errs: v.Errs) -> None:
    policy = spec.get("podFailurePolicy")
    if policy is None:
        return
    rules = _l(_d(policy).get("rules"))
    if len(rules) > MAX_POD_FAILURE_POLICY_RULES:
        errs._add("FieldValueTooMany", f"{path}.rules",
                  f"Too many: {len(rules)}: must have at most {MAX_POD_FAILURE_POLICY_RULES} items")
    restart = _d(_d(spec.get("template")).get("spec")).get("restartPolicy")
    if restart != "Never":
        errs.invalid(f"{path[:-len('podFailurePolicy')]}template.spec.restartPolicy", restart,
                     'only "Never" is supported when podFailurePolicy is specified')
    for i, rule in enumerate(rules):
        rule, rp = _d(rule), f"{path}.rules[{i}]"
        action = rule.get("action")
        errs.enum(f"{rp}.action", action, POD_FAILURE_ACTIONS)
        if action == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
            errs.invalid(f"{rp}.action", action, "requires the backoffLimitPerIndex to be set")
        on_codes, on_conds = rule.get("onExitCodes"), rule.get("onPodConditions")
        if on_codes is not None and on_conds is not None:
            errs.invalid(rp, rule, "specifying both OnExitCodes and OnPodConditions is not supported")
        elif on_codes is None and on_conds is None:
            errs.invalid(rp, rule, "specifying one of OnExitCodes and OnPodConditions is required")
        if on_codes is not None:
            _validate_exit_codes(_d(on_codes), f"{rp}.onExitCodes", errs)
        for j, pattern in enumerate(_l(on_conds)):
            pattern, pp = _d(pattern), f"{rp}.onPodConditions[{j}]"
            errs.enum(f"{pp}.status", pattern.get("status"), CONDITION_STATUSES)
            ctype = str(pattern.get("type") or "")
            if not ctype:
                errs.required(f"{pp}.type")
            else:
                errs.each(f"{pp}.type", ctype, v.is_qualified_name(ctype))


def _validate_exit_codes(req: dict, path: str, errs: v.Errs) -> None:
    op, values = req.get("operator"), _l(req.get("values"))
    errs.enum(f"{path}.operator", op, EXIT_CODE_OPERATORS)
    if req.get("containerName") is not None:
        errs.each(f"{path}.containerName", req["containerName"], v.is_dns1123_label(str(req["containerName"])))
    if not values:
        errs.required(f"{path}.values", "at least one value is required")
    elif len(values) > MAX_EXIT_CODE_VALUES:
        errs._add("FieldValueTooMany", f"{path}.values",
                  f"Too many: {len(values)}: must have at most {MAX_EXIT_CODE_VALUES} items")
    seen: set[Any] = set()
    for k, value in enumerate(values):
        if value in seen:
            errs.duplicate(f"{path}.values[{k}]", value)
        if op == "In" and value == 0 and req.get("containerName") is None:
            errs.invalid(f"{path}.values[{k}]", value,
                         "must not be 0 for the In operator if containerName is empty")
        if k > 0 and v.is_int(value) and v.is_int(values[k - 1]) and values[k - 1] > value:
            errs.invalid(f"{path}.values[{k}]", value, "must be ordered")
        seen.add(value)


def index_interval_error(text: str, completions: int) -> tuple[int, str | None]:
    """(how many indexes, None) for a well-formed "1,3-5" below ``completions``; else (0, upstream's message)."""
    if not text:
        return 0, None
    total, last = 0, None
    for part in text.split(","):
        limits = part.split("-")
        if len(limits) > 2:
            return 0, (f"the fragment {_go_quote(part)} violates the requirement that an index interval can have "
                       "at most two parts separated by '-'")
        bounds: list[int] = []
        for limit in limits:
            if not _ATOI.fullmatch(limit):  # what Go's strconv.Atoi accepts
                return 0, f"cannot convert string to integer for index: {_go_quote(limit)}"
            n = int(limit)
            if n >= completions:
                return 0, f"too large index: {_go_quote(limit)}"
            bounds.append(n)
        x, y = bounds[0], bounds[-1]
        if len(bounds) == 2 and x >= y:
            return 0, f"non-increasing order, previous: {x}, current: {y}"
        if last is not None and last >= x:
            return 0, f"non-increasing order, previous: {last}, current: {x}"
        total += y - x + 1
        last = y
    return total, None


def _go_quote(text: str) -> str:
    return json.dumps(text)  # Go's %q, for the ASCII an index list holds


def _validate_success_policy(spec: dict, path: str, errs: v.Errs) -> None:
    rules = _l(_d(spec.get("successPolicy")).get("rules"))
    if not rules:
        errs.required(f"{path}.rules", "at least one rules must be specified when the successPolicy is specified")
    if len(rules) > MAX_SUCCESS_POLICY_RULES:
        errs._add("FieldValueTooMany", f"{path}.rules",
                  f"Too many: {len(rules)}: must have at most {MAX_SUCCESS_POLICY_RULES} items")
    completions = spec.get("completions") if v.is_int(spec.get("completions")) else 0
    for i, rule in enumerate(rules):
        rule, rp = _d(rule), f"{path}.rules[{i}]"
        indexes, count = rule.get("succeededIndexes"), rule.get("succeededCount")
        if indexes is None and count is None:
            errs.required(rp, "at least one of succeededCount or succeededIndexes must be specified")
        total = 0
        if indexes is not None:
            text = str(indexes)
            if len(text) > MAX_SUCCEEDED_INDEXES_LENGTH:
                errs.too_long(f"{rp}.succeededIndexes", MAX_SUCCEEDED_INDEXES_LENGTH)
            total, problem = index_interval_error(text, completions)
            if problem is not None:
                errs.invalid(f"{rp}.succeededIndexes", text, f"error parsing succeededIndexes: {problem}")
        if count is not None:
            errs.nonnegative(f"{rp}.succeededCount", count)
            if v.is_int(count) and count > completions:
                errs.invalid(f"{rp}.succeededCount", count,
                             f"must be less than or equal to {completions} (the number of specified completions)")
            if indexes is not None and v.is_int(count) and count > total:
                errs.invalid(f"{rp}.succeededCount", count, f"must be less than or equal to {total} (the number of "
                                                            "indexes in the specified succeededIndexes field)")


def validate_job_spec(spec: dict, path: str, errs: v.Errs) -> None:
    """JobSpec rules shared by a Job (``spec``) and a CronJob's ``spec.jobTemplate.spec`` (no selector rules)."""
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                "backoffLimitPerIndex", "maxFailedIndexes"):
        errs.nonnegative(f"{path}.{key}", spec.get(key))
    mode = spec.get("completionMode")
    if mode is not None:
        errs.enum(f"{path}.completionMode", mode, COMPLETION_MODES)
    if mode == "Indexed":
        if spec.get("completions") is None:
            errs.required(f"{path}.completions", "when completion mode is Indexed")
        elif v.is_int(spec["completions"]) and spec["completions"] > MAX_INDEXED_COMPLETIONS:
            errs.invalid(f"{path}.completions", spec["completions"],
                         f"must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed")
        if v.is_int(spec.get("parallelism")) and spec["parallelism"] > MAX_INDEXED_COMPLETIONS:
            errs.invalid(f"{path}.parallelism", spec["parallelism"],
                         f"must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed")
    if spec.get("backoffLimitPerIndex") is not None and mode != "Indexed":
        errs.required(f"{path}.completionMode", 'when backoffLimitPerIndex is specified, completionMode must be "Indexed"')
    if spec.get("maxFailedIndexes") is not None:
        if spec.get("backoffLimitPerIndex") is None:
            errs.required(f"{path}.backoffLimitPerIndex", "when maxFailedIndexes is specified")
        elif v.is_int(spec["maxFailedIndexes"]) and v.is_int(spec.get("completions")) \
                and spec["maxFailedIndexes"] > spec["completions"]:
            errs.invalid(f"{path}.maxFailedIndexes", spec["maxFailedIndexes"], "must be less than or equal to completions")
    policy = spec.get("podReplacementPolicy")
    if policy is not None:
        if spec.get("podFailurePolicy") is not None and policy != "Failed":
            errs.not_supported(f"{path}.podReplacementPolicy", policy, ("Failed",))
        else:
            errs.enum(f"{path}.podReplacementPolicy", policy, POD_REPLACEMENT_POLICIES)
    _validate_pod_failure_policy(spec, f"{path}.podFailurePolicy", errs)
    if spec.get("successPolicy") is not None:
        if mode != "Indexed":
            errs.invalid(f"{path}.successPolicy", spec["successPolicy"], "requires indexed completion mode")
        else:
            _validate_success_policy(spec, f"{path}.successPolicy", errs)
    template = spec.get("template")
    v.validate_pod_template(template, f"{path}.template", errs, owner="Job", always_restart=False)
    restart = _d(_d(template).get("spec")).get("restartPolicy")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict) and restart not in ("OnFailure", "Never"):
        errs.not_supported(f"{path}.template.spec.restartPolicy", restart or "", ("OnFailure", "Never"))


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    if old is None:
        _validate_generated_selector(obj, errs)
    validate_job_spec(spec, "spec", errs)
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        errs.required("spec.selector")
    else:
        v.validate_label_selector(selector, "spec.selector", errs)
        labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
        if not v.selector_matches(selector, labels):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    if old is not None:
        _validate_update(spec, old, errs)


def _validate_update(spec: dict, old: dict, errs: v.Errs) -> None:
    old_spec = _d(old.get("spec"))
    started = _d(old.get("status")).get("startTime") is not None
    # An Indexed Job may scale: completions changed together with parallelism (upstream's elastic Indexed Jobs).
    elastic = spec.get("completionMode") == "Indexed" and spec.get("completions") == spec.get("parallelism") \
        and old_spec.get("completions") == old_spec.get("parallelism")
    if not elastic:
        v.validate_immutable(spec.get("completions"), old_spec.get("completions"), "spec.completions", errs)
    for key in ("selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy",
                "successPolicy"):
        v.validate_immutable(spec.get(key), old_spec.get(key), f"spec.{key}", errs)
    template, old_template = spec.get("template"), old_spec.get("template")
    if old_spec.get("suspend") is True and not started:
        # Suspended and never started: scheduling directives, labels and annotations may still change.
        template, old_template = _without_scheduling(template), _without_scheduling(old_template)
    v.validate_immutable(template, old_template, "spec.template", errs)


def _without_scheduling(template: Any) -> Any:
    t = copy.deepcopy(_d(template))
    for key in ("labels", "annotations"):
        _d(t.get("metadata")).pop(key, None)
    for key in _MUTABLE_SCHEDULING:
        _d(t.get("spec")).pop(key, None)
    return t


# -- printer (printJob) ---------------------------------------------------------------
def _has_condition(status: dict, ctype: str) -> bool:
    return any(_d(c).get("type") == ctype and _d(c).get("status") == "True" for c in _l(status.get("conditions")))


def job_status_word(obj: dict) -> str:
    """The STATUS column: Complete, Failed, Terminating, Suspended, FailureTarget, SuccessCriteriaMet or Running."""
    status = _d(obj.get("status"))
    for ctype in ("Complete", "Failed"):
        if _has_condition(status, ctype):
            return ctype
    if _d(obj.get("metadata")).get("deletionTimestamp"):
        return "Terminating"
    for ctype, word in (("Suspended", "Suspended"), ("FailureTarget", "FailureTarget"),
                        ("SuccessCriteriaMet", "SuccessCriteriaMet")):
        if _has_condition(status, ctype):
            return word
    return "Running"


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    succeeded = status.get("succeeded") or 0
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    start, end = _parse(status.get("startTime")), _parse(status.get("completionTime"))
    if start is None:
        duration = ""
    elif end is None:
        duration = printers.human_duration((now - start).total_seconds())
    else:
        duration = printers.human_duration((end - start).total_seconds())
    names, images = printers.containers_and_images(_d(_d(spec.get("template")).get("spec")))
    return [printers.name_cell(obj), job_status_word(obj), completions, duration, printers.age_cell(obj, now),
            names, images, printers.format_label_selector(spec.get("selector"))]


SELECTOR_DOC = ("A label query over pods that should match the pod count. Normally, the system sets this field for "
                "you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/"
                "#label-selectors")
_COLUMNS = (
    printers.name_column(),
    printers.column("Status", "Status of the job."),
    printers.column("Completions", "The number of pods which reached phase Succeeded. The value increases "
                    "monotonically for a given spec. However, it may decrease in reaction to scale down of elastic "
                    "indexed jobs."),
    printers.column("Duration", "Time required to complete the job."),
    printers.age_column(),
    printers.column("Containers", printers.CONTAINERS_DOC, priority=1),
    printers.column("Images", printers.IMAGES_DOC, priority=1),
    printers.column("Selector", SELECTOR_DOC, priority=1),
)


def _fields(obj: dict) -> dict[str, str]:
    from kubepy.meta.selectors import generic_fields
    return {**generic_fields(obj), "status.successful": str(_d(obj.get("status")).get("succeeded") or 0)}


JOB = register(Kind(
    "batch", "v1", "Job", "jobs", namespaced=True, subresources=("status",), categories=("all",),
    has_status=True, has_spec_generation=True, model="V1Job", proto="Job",
    proto_schema="""
Job
    1 metadata                         ObjectMeta
    2 spec                             JobSpec
    3 status                           JobStatus
JobSpec
    1 parallelism                      *int32
    2 completions                      *int32
    3 activeDeadlineSeconds            *int64
   11 podFailurePolicy                 *PodFailurePolicy
   16 successPolicy                    *SuccessPolicy
    7 backoffLimit                     *int32
   12 backoffLimitPerIndex             *int32
   13 maxFailedIndexes                 *int32
    4 selector                         *LabelSelector
    5 manualSelector                   *bool
    6 template                         PodTemplateSpec
    8 ttlSecondsAfterFinished          *int32
    9 completionMode                   *string
   10 suspend                          *bool
   14 podReplacementPolicy             *string
   15 managedBy                        *string
JobStatus
    1 conditions                       []JobCondition
    2 startTime                        *Time
    3 completionTime                   *Time
    4 active                           int32
    5 succeeded                        int32
    6 failed                           int32
   11 terminating                      *int32
    7 completedIndexes                 string
   10 failedIndexes                    *string
    8 uncountedTerminatedPods          *UncountedTerminatedPods
    9 ready                            *int32
JobCondition
    1 type                             string
    2 status                           string
    3 lastProbeTime                    Time
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
PodFailurePolicy
    1 rules                            []PodFailurePolicyRule
PodFailurePolicyRule
    1 action                           string
    2 onExitCodes                      *PodFailurePolicyOnExitCodesRequirement
    3 onPodConditions                  []PodFailurePolicyOnPodConditionsPattern
PodFailurePolicyOnExitCodesRequirement
    1 containerName                    *string
    2 operator                         string
    3 values                           []int32
PodFailurePolicyOnPodConditionsPattern
    1 type                             string
    2 status                           string
SuccessPolicy
    1 rules                            []SuccessPolicyRule
SuccessPolicyRule
    1 succeededIndexes                 *string
    2 succeededCount                   *int32
UncountedTerminatedPods
    1 succeeded                        []string
    2 failed                           []string
""",
    api_types=("Job", "JobList", "JobSpec", "JobStatus", "JobCondition", "PodFailurePolicy", "PodFailurePolicyRule",
               "PodFailurePolicyOnExitCodesRequirement", "PodFailurePolicyOnPodConditionsPattern", "SuccessPolicy",
               "SuccessPolicyRule", "UncountedTerminatedPods", "JobTemplateSpec"),
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells), fields=_fields,
))
