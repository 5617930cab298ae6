"""SelfSubjectAccessReview (authorization.k8s.io/v1): may I do this? (``kubectl auth can-i``)."""

from kubepy.kinds import Kind, Strategy, register
from kubepy.kinds import authorization as a

SELFSUBJECTACCESSREVIEW = register(Kind(
    a.GROUP, "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False,
    model="V1SelfSubjectAccessReview", proto="SelfSubjectAccessReview",
    proto_schema=a.PROTO_COMMON + """
SelfSubjectAccessReview
    1 metadata                         ObjectMeta
    2 spec                             SelfSubjectAccessReviewSpec
    3 status                           *SubjectAccessReviewStatus
""",
    api_types=("SelfSubjectAccessReview", "SelfSubjectAccessReviewSpec", "ResourceAttributes",
               "NonResourceAttributes", "SubjectAccessReviewStatus", "FieldSelectorAttributes",
               "LabelSelectorAttributes"),
    strategy=Strategy(validate=a.validate_self_spec, name_rule=a.any_name),
    virtual=True,
))
