"""SubjectAccessReview (authorization.k8s.io/v1): may this user (and groups) do this?"""

from kubepy.kinds import Kind, Strategy, register
from kubepy.kinds import authorization as a

SUBJECTACCESSREVIEW = register(Kind(
    a.GROUP, "v1", "SubjectAccessReview", "subjectaccessreviews", namespaced=False,
    model="V1SubjectAccessReview", proto="SubjectAccessReview",
    proto_schema="""
SubjectAccessReview
    1 metadata                         ObjectMeta
    2 spec                             SubjectAccessReviewSpec
    3 status                           *SubjectAccessReviewStatus
""",
    api_types=("SubjectAccessReview", "SubjectAccessReviewSpec"),
    strategy=Strategy(validate=a.validate_subject_spec, name_rule=a.any_name),
    virtual=True,
))
