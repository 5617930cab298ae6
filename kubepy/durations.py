"""Go-style durations as Kubernetes' flags take them: ``300``, ``5m``, ``1h30m``, ``1.5s``, ``250ms``.

Shared by the command-line flags (``kubepy.cli``) and bootstrap-token TTLs
(``kubepy.bootstraptoken``); imports nothing of kubepy.
"""

from __future__ import annotations

import re

__all__ = ["parse_seconds"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str, *, examples: str = "30s, 5m, 1h") -> float:
    """Seconds in ``text`` (plain seconds, or number+unit runs); ValueError naming ``examples``."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r} (examples: {examples})")
    return sum(float(n) * _UNITS[u] for n, u in parts)
