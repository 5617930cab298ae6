"""Test utilities that ship with kubepy (like Kubernetes' kubemark)."""
