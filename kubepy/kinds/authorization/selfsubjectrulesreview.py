"""SelfSubjectRulesReview (authorization.k8s.io/v1): everything I may do in a namespace
(``kubectl auth can-i --list``)."""

from kubepy.kinds import Kind, Strategy, register
from kubepy.kinds import authorization as a
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    return None


SELFSUBJECTRULESREVIEW = register(Kind(
    a.GROUP, "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", namespaced=False,
    model="V1SelfSubjectRulesReview", proto="SelfSubjectRulesReview",
    proto_schema="""
SelfSubjectRulesReview
    1 metadata                         ObjectMeta
    2 spec                             SelfSubjectRulesReviewSpec
    3 status                           *SubjectRulesReviewStatus
SelfSubjectRulesReviewSpec
    1 namespace                        string
ResourceRule
    1 verbs                            []string
    2 apiGroups                        []string
    3 resources                        []string
    4 resourceNames                    []string
NonResourceRule
    1 verbs                            []string
    2 nonResourceURLs                  []string
SubjectRulesReviewStatus
    1 resourceRules                    []ResourceRule
    2 nonResourceRules                 []NonResourceRule
    3 incomplete                       bool
    4 evaluationError                  string
""",
    api_types=("SelfSubjectRulesReview", "SelfSubjectRulesReviewSpec", "ResourceRule", "NonResourceRule",
               "SubjectRulesReviewStatus"),
    strategy=Strategy(validate=_validate, name_rule=a.any_name),
    virtual=True,
))
