"""TokenReview (authentication.k8s.io/v1): "who is this bearer token?", answered, never stored.

The API server authenticates ``spec.token`` against ``spec.audiences`` (its
own audiences when empty) and answers ``status.authenticated``, ``user``,
``audiences`` or ``error`` (kubepy.api.serviceaccounts)."""

from kubepy.kinds import Kind, register

# Type names of the authentication.k8s.io/v1 package, for OpenAPI canonical names (TokenRequest is
# serviceaccounts/token's body).
API_TYPES = ("TokenReview", "TokenReviewSpec", "TokenReviewStatus", "UserInfo", "TokenRequest", "TokenRequestSpec",
             "TokenRequestStatus", "BoundObjectReference", "SelfSubjectReview", "SelfSubjectReviewStatus")

# k8s.io/api/authentication/v1 generated.proto: what kubectl and client-go send (TokenRequest is the
# body of serviceaccounts/token; UserInfo.extra (map of ExtraValue) is only ever answered, never sent).
PROTO_SCHEMA = """
TokenReview
    1 metadata                         ObjectMeta
    2 spec                             TokenReviewSpec
    3 status                           TokenReviewStatus
TokenReviewSpec
    1 token                            string
    2 audiences                        []string
TokenReviewStatus
    1 authenticated                    bool
    2 user                             UserInfo
    3 error                            string
    4 audiences                        []string
UserInfo
    1 username                         string
    2 uid                              string
    3 groups                           []string
TokenRequest
    1 metadata                         ObjectMeta
    2 spec                             TokenRequestSpec
    3 status                           TokenRequestStatus
TokenRequestSpec
    1 audiences                        []string
    4 expirationSeconds                *int64
    3 boundObjectRef                   *BoundObjectReference
TokenRequestStatus
    1 token                            string
    2 expirationTimestamp              Time
BoundObjectReference
    1 kind                             string
    2 apiVersion                       string
    3 name                             string
    4 uid                              string
SelfSubjectReview
    1 metadata                         ObjectMeta
    2 status                           SelfSubjectReviewStatus
SelfSubjectReviewStatus
    1 userInfo                         UserInfo
"""

TOKENREVIEW = register(Kind(
    "authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, model="V1TokenReview",
    api_types=API_TYPES, virtual=True, proto="TokenReview", proto_schema=PROTO_SCHEMA,
))
