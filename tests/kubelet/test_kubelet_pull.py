"""Pulling images from a real registry: imagePullPolicy Always / IfNotPresent and a missing tag.

No public registry is reachable here, so the test runs one: Debian's
``docker-registry`` (the CNCF distribution registry) serving plain HTTP on
127.0.0.1:5000 *inside the node's netns* — the node's own loopback, where
the kubelet and its containerd live, so no traffic leaves the test's
namespace. ``skopeo`` pushes a locally built busybox OCI archive to it —
one with its own applet set, so its layer, config and manifest differ from
the busybox the node imported and every byte has to come from the registry.
This module gets its own kubelet node (the fixtures are module-scoped).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubepy.client import Client
from kubepy.images import busybox_image
from kubepy.kubelet.runtime import chain_id
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import cstatus, pod, wait_for
from tests.kubelet.test_kubelet_gaps import (
    delete_all,
    events_of,
    wait_events,
    waiting_reason,
)

pytestmark = pytest.mark.slow

REGISTRY = "127.0.0.1:5000"
REPO_PATH = "kubepy/busybox"
IMAGE = f"{REGISTRY}/{REPO_PATH}:pulled"
SLEEPER = "trap 'exit 0' TERM; while true; do sleep 1; done"
PUSHED_APPLETS = ["sh", "sleep", "cat", "echo", "test"]     # not the node's busybox:1.36


@dataclass
class Registry:
    proc: subprocess.Popen
    tmp: Path
    digest: str          # the pushed manifest's digest, as the registry reports it
    chain_id: str        # its layers' chain id: the snapshot a container of it is prepared on

    @property
    def log(self) -> Path:
        return self.tmp / "registry.log"

    def requests(self, what: str) -> list[str]:
        """Access-log lines made by containerd (not skopeo) whose path starts /v2/<repo>/<what>."""
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if f" /v2/{REPO_PATH}/{what}" in line and '"containerd/' in line]


def in_node(node: KubeletNode, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", node.netns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _http_status(node: KubeletNode, url: str) -> int:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n"
            "except OSError:\n    print(0)\n")
    out = in_node(node, sys.executable, "-c", code, url).stdout.strip()
    return int(out) if out.isdigit() else 0


@pytest.fixture(scope="module")
def registry(kubelet_node: KubeletNode) -> Iterator[Registry]:
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/install installs it)")
    node = kubelet_node
    tmp = Path(tempfile.mkdtemp(prefix="kpreg-", dir="/tmp"))
    proc: subprocess.Popen | None = None
    try:
        (tmp / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {REGISTRY}\n")
        with open(tmp / "registry.log", "ab") as logf:
            # ip netns exec execs the registry: proc.pid is the registry's own pid.
            proc = subprocess.Popen(["ip", "netns", "exec", node.netns, "docker-registry", "serve",
                                     str(tmp / "config.yml")], stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while _http_status(node, f"http://{REGISTRY}/v2/") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"registry never answered GET /v2/:\n{(tmp / 'registry.log').read_text()}")
            time.sleep(0.2)
        # The builder makes an OCI image layout as a tar: skopeo's oci-archive transport.
        archive = busybox_image(IMAGE, tmp / "pushed.tar", applets=PUSHED_APPLETS)
        push = in_node(node, "skopeo", "copy", "--dest-tls-verify=false",
                       f"oci-archive:{archive}", f"docker://{IMAGE}", timeout=120)
        assert push.returncode == 0, push.stderr
        insp = in_node(node, "skopeo", "inspect", "--tls-verify=false", f"docker://{IMAGE}")
        assert insp.returncode == 0, insp.stderr
        digest = json.loads(insp.stdout)["Digest"]
        assert digest.startswith("sha256:"), digest
        cfg = in_node(node, "skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{IMAGE}")
        assert cfg.returncode == 0, cfg.stderr
        chain = chain_id(json.loads(cfg.stdout)["rootfs"]["diff_ids"])
        assert chain is not None
        yield Registry(proc=proc, tmp=tmp, digest=digest, chain_id=chain)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_pull_policies_against_a_real_registry(kubelet_node: KubeletNode, registry: Registry,
                                                     client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    assert not node.ctr("images", "ls", "-q", f"name=={IMAGE}").strip(), "image present before the pull"

    # Always: the kubelet pulls from the registry, the container runs from the pulled image.
    await client.create("pods", pod(node, "always", [{"name": "main", "image": IMAGE, "imagePullPolicy": "Always",
                                                      "command": ["sh", "-c", SLEEPER]}]), namespace=ns)
    p = await wait_for(client, node, "always", lambda p: p["status"].get("phase") == "Running",
                       timeout=90, what="Running")
    st = cstatus(p, "main")
    assert "running" in st["state"], st
    assert st["image"] == IMAGE
    assert st["imageID"] == f"{REGISTRY}/{REPO_PATH}@{registry.digest}", (st["imageID"], registry.digest)
    # Its rootfs snapshot sits on the pulled image's layers (not on the node's own busybox).
    snap = json.loads(node.ctr("snapshots", "info", st["containerID"].removeprefix("containerd://")))
    assert snap.get("Parent") == registry.chain_id, (snap, registry.chain_id)
    evs = await wait_events(client, node, "always", lambda evs: any(e["reason"] == "Started" for e in evs),
                            what="Started")
    msgs = [(e["reason"], e["message"]) for e in evs]
    assert ("Pulling", f'Pulling image "{IMAGE}"') in msgs, msgs
    assert any(r == "Pulled" and m.startswith(f'Successfully pulled image "{IMAGE}" in ') for r, m in msgs), msgs
    # containerd really fetched manifest and blobs from the registry, and holds the image by that digest.
    fetched = registry.requests("manifests/")
    assert any(f'"GET /v2/{REPO_PATH}/manifests/{registry.digest} ' in line for line in fetched), fetched
    blobs = registry.requests("blobs/")
    assert len([line for line in blobs if line.split('"')[1].startswith("GET ")]) >= 2, \
        registry.log.read_text()    # config + layer
    listed = node.ctr("images", "ls", f"name=={IMAGE}")
    assert registry.digest in listed, listed

    # IfNotPresent: the image is there now, so no pull — no Pulling event, no registry request.
    await client.create("pods", pod(node, "ifnp", [{"name": "main", "image": IMAGE,
                                                    "imagePullPolicy": "IfNotPresent",
                                                    "command": ["sh", "-c", SLEEPER]}]), namespace=ns)
    p = await wait_for(client, node, "ifnp", lambda p: p["status"].get("phase") == "Running",
                       timeout=60, what="Running")
    assert cstatus(p, "main")["imageID"] == f"{REGISTRY}/{REPO_PATH}@{registry.digest}"
    evs = await wait_events(client, node, "ifnp", lambda evs: any(e["reason"] == "Started" for e in evs),
                            what="Started")
    assert not [e for e in evs if e["reason"] == "Pulling"], evs
    assert [e["message"] for e in evs if e["reason"] == "Pulled"] == \
        [f'Container image "{IMAGE}" already present on machine'], evs
    assert registry.requests("manifests/") == fetched and registry.requests("blobs/") == blobs, \
        "IfNotPresent went to the registry"

    # Always on a tag the registry does not have: ErrImagePull, the registry's "not found".
    missing = f"{REGISTRY}/{REPO_PATH}:no-such-tag"
    await client.create("pods", pod(node, "missing", [{"name": "main", "image": missing,
                                                       "imagePullPolicy": "Always",
                                                       "command": ["sh", "-c", SLEEPER]}]), namespace=ns)
    p = await wait_for(client, node, "missing", lambda p: waiting_reason(p, "main") == "ErrImagePull",
                       timeout=60, what="ErrImagePull")
    w = cstatus(p, "main")["state"]["waiting"]
    assert w["message"].startswith(f'Failed to pull image "{missing}": '), w
    assert "not found" in w["message"], w
    assert p["status"]["phase"] == "Pending"
    assert registry.requests("manifests/no-such-tag "), "the missing tag was never asked of the registry"
    evs = await events_of(client, node, "missing")
    assert ("Warning", "Failed", "Error: ErrImagePull") in {(e["type"], e["reason"], e["message"]) for e in evs}

    await delete_all(client, node, ["always", "ifnp", "missing"])
