"""``batch/v1``: one module per kind."""
