"""kubepy: a small, real Kubernetes for Linux hosts."""

__version__ = "0.1.0"
