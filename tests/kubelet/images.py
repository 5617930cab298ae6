"""Session fixtures: small OCI archives built locally (no registry is reachable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepy.images import busybox_image

BUSYBOX_REF = "busybox:1.36"


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI archive that ``ctr images import`` names docker.io/library/busybox:1.36."""
    return busybox_image(BUSYBOX_REF, tmp_path_factory.mktemp("images") / "busybox.tar")
