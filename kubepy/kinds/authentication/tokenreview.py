"""TokenReview (authentication.k8s.io/v1): "who is this bearer token?", answered, never stored.

The API server authenticates ``spec.token`` against ``spec.audiences`` (its
own audiences when empty) and answers ``status.authenticated``, ``user``,
``audiences`` or ``error`` (kubepy.api.serviceaccounts)."""

from kubepy.kinds import Kind, register

# Type names of the authentication.k8s.io/v1 package, for OpenAPI canonical names (TokenRequest is
# serviceaccounts/token's body).
API_TYPES = ("TokenReview", "TokenReviewSpec", "TokenReviewStatus", "UserInfo", "TokenRequest", "TokenRequestSpec",
             "TokenRequestStatus", "BoundObjectReference", "SelfSubjectReview", "SelfSubjectReviewStatus")

TOKENREVIEW = register(Kind(
    "authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, model="V1TokenReview",
    api_types=API_TYPES, virtual=True,
))
