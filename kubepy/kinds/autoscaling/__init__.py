"""``autoscaling/v2`` (storage) and ``autoscaling/v1``: one module per kind, plus the v1 ⇄ v2 conversion."""
