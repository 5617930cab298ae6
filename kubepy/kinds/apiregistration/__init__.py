"""``apiregistration.k8s.io/v1``: one module per kind."""
