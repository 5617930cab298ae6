"""The version kubepy reports: its own, and the Kubernetes API level it answers as.

Shared by the API server (/version) and the kubelet (node info), which must agree.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from kubepy import __version__

# The Kubernetes API level kubepy answers as; kubectl warns beyond ±1 minor.
KUBE_MAJOR, KUBE_MINOR = "1", "36"


def version_info() -> dict[str, Any]:
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0+kubepy.{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "compiler": "cpython",
        "platform": f"linux/{'amd64' if platform.machine() == 'x86_64' else platform.machine()}",
    }


