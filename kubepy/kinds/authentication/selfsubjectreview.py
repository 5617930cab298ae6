"""SelfSubjectReview (authentication.k8s.io/v1): "who am I?" (``kubectl auth whoami``), answered, never stored.

``status.userInfo`` is the caller's own identity as the API server
authenticated it: username, uid, groups, extra."""

from kubepy.kinds import Kind, register

SELFSUBJECTREVIEW = register(Kind(
    "authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False,
    model="V1SelfSubjectReview", virtual=True, proto="SelfSubjectReview",  # its messages: tokenreview.py
))
