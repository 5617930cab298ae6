"""LocalSubjectAccessReview (authorization.k8s.io/v1): a SubjectAccessReview within one namespace
(what a namespace's admin may ask)."""

from kubepy.kinds import Kind, Strategy, register
from kubepy.kinds import authorization as a
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    a.validate_subject_spec(obj, old, errs)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if spec.get("nonResourceAttributes") is not None:
        errs.invalid("spec.nonResourceAttributes", spec["nonResourceAttributes"], "disallowed on this kind of request")


LOCALSUBJECTACCESSREVIEW = register(Kind(
    a.GROUP, "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", namespaced=True,
    model="V1LocalSubjectAccessReview", proto="LocalSubjectAccessReview",
    proto_schema="""
LocalSubjectAccessReview
    1 metadata                         ObjectMeta
    2 spec                             SubjectAccessReviewSpec
    3 status                           *SubjectAccessReviewStatus
""",
    api_types=("LocalSubjectAccessReview",),
    strategy=Strategy(validate=_validate, name_rule=a.any_name),
    virtual=True,
))
