"""The pod worker's errors, shared by ``pods`` and ``volumes``.

Errors::

    PodError
     ├── ConfigError     CreateContainerConfigError: env/volume source missing
     │   └── UnsupportedVolume  a volume type this kubelet can't provide
     └── MountError      FailedMount: a volume could not be set up
"""

from __future__ import annotations

__all__ = ["ConfigError", "MountError", "PodError", "UnsupportedVolume"]


class PodError(Exception):
    """Base of pod worker errors."""


class ConfigError(PodError):
    """A container's configuration cannot be resolved (CreateContainerConfigError)."""


class MountError(PodError):
    """A volume could not be set up (FailedMount)."""


class UnsupportedVolume(ConfigError):
    """A volume of a type this kubelet cannot provide: the pod must not run without it."""
