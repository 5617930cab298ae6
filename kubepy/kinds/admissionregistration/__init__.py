"""``admissionregistration.k8s.io/v1``: one module per kind (``webhooks`` holds what both share)."""
