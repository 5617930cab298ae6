"""``authorization.k8s.io/v1``: the access reviews, create-only kinds nothing stores.

A review is answered, not kept (kubepy.api.reviews evaluates it against the
API server's authorizers): SelfSubjectAccessReview and
SelfSubjectRulesReview ask about the caller, SubjectAccessReview and
LocalSubjectAccessReview about anyone. What the four share lives here:
spec validation as upstream's pkg/apis/authorization/validation, the
protobuf messages of k8s.io/api/authorization/v1/generated.proto.
"""

from __future__ import annotations

from typing import Any

from kubepy.kinds import validation as v

GROUP = "authorization.k8s.io"

# SubjectAccessReviewSpec.extra (5, map<string, ExtraValue>) is JSON only: protobuf.py's schema has no
# message that is a bare list in JSON, so a protobuf body carrying it is refused, not misread.
PROTO_COMMON = """
ResourceAttributes
    1 namespace                        string
    2 verb                             string
    3 group                            string
    4 version                          string
    5 resource                         string
    6 subresource                      string
    7 name                             string
    8 fieldSelector                    *FieldSelectorAttributes
    9 labelSelector                    *LabelSelectorAttributes
FieldSelectorAttributes
    1 rawSelector                      string
    2 requirements                     []FieldSelectorRequirement
FieldSelectorRequirement
    1 key                              string
    2 operator                         string
    3 values                           []string
LabelSelectorAttributes
    1 rawSelector                      string
    2 requirements                     []LabelSelectorRequirement
NonResourceAttributes
    1 path                             string
    2 verb                             string
SubjectAccessReviewSpec
    1 resourceAttributes               *ResourceAttributes
    2 nonResourceAttributes            *NonResourceAttributes
    3 user                             string
    4 groups                           []string
    6 uid                              string
SelfSubjectAccessReviewSpec
    1 resourceAttributes               *ResourceAttributes
    2 nonResourceAttributes            *NonResourceAttributes
SubjectAccessReviewStatus
    1 allowed                          bool
    2 reason                           string
    3 evaluationError                  string
    4 denied                           bool
"""


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def validate_attributes(spec: dict, errs: v.Errs) -> None:
    """ValidateSelfSubjectAccessReviewSpec: exactly one of the two attribute sets."""
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if res is not None and non is not None:
        errs.invalid("spec.nonResourceAttributes", non, "cannot be specified in combination with resourceAttributes")
    if res is None and non is None:
        errs.invalid("spec.resourceAttributes", None,
                     "exactly one of nonResourceAttributes or resourceAttributes must be specified")


def validate_subject_spec(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    validate_attributes(spec, errs)
    if not spec.get("user") and not spec.get("groups"):
        errs.invalid("spec.user", spec.get("user", ""), "at least one of user or group must be specified")


def validate_self_spec(obj: dict, old: dict | None, errs: v.Errs) -> None:
    validate_attributes(_d(obj.get("spec")), errs)


def any_name(name: str) -> list[str]:
    """A review needs no name (and may have any)."""
    return []


