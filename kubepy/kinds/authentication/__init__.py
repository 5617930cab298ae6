"""``authentication.k8s.io/v1``: create-only reviews (one module per kind), answered by the API server, never stored."""
