"""The README's example on a fresh 3-node lab cluster: examples/run brings it up, it answers
through its NodePort on every node, survives losing any one of its pods, and a rolling update
to v2 completes with the app answering throughout.

This lab runs kube-proxy in nftables mode (``kubepy up --proxy-mode nftables``): the other labs
run the default iptables mode, so the example app's Services are the nftables mode's end-to-end
check at no extra lab's cost."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app():
    lab = Lab()
    try:
        lab.kubepy("up", "--nodes", "3", "--proxy-mode", "nftables")
        # HOME stays a real home: kubectl keeps its discovery cache there, not in the repo.
        env = {**os.environ, "NAME": lab.name, "STATE_DIR": str(lab.root)}
        run = subprocess.run([str(REPO / "examples" / "run")], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
        if run.returncode != 0:
            pods = lab.kubectl("get", "pods", "-o", "wide", check=False).stdout
            events = lab.kubectl("get", "events", check=False).stdout
            logs = "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                             for p in sorted((lab.root / lab.name / "logs").glob("*kubelet.log")))
            raise AssertionError(f"examples/run failed:\n{run.stdout[-2000:]}\n{run.stderr}\n{pods}\n{events}\n{logs}")
        assert "the first 20 primes: 2 3 5 7 11" in run.stdout
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def node_ips(lab: Lab) -> list[str]:
    return [next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
            for n in lab.json("get", "nodes")["items"]]


def get(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:30080/", timeout=5) as r:
        return r.read().decode().strip()


def answers(ips: list[str], prefix: str = "hello from web") -> bool:
    """Every node answers with ``prefix`` (a 503 while Redis restarts is a no, not an error)."""
    try:
        return all(get(ip).startswith(prefix) for ip in ips)
    except OSError:
        return False


def test_answers_on_every_node_and_counts_in_redis(app: Lab):
    replies = [get(ip) for ip in node_ips(app)]
    assert all(r.startswith("hello from web v1 on web-") for r in replies), replies
    counts = [int(r.rsplit("visits: ", 1)[1]) for r in replies]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), "each visit reaches the one Redis"


def test_every_node_proxies_with_nftables(app: Lab):
    web = app.json("get", "svc", "web")["spec"]["clusterIP"]
    for i in (1, 2, 3):
        elements = app.in_node(i, "nft", "list", "map", "ip", "kube-proxy", "service-ips")
        assert elements.returncode == 0 and f"{web} . tcp . 80 : goto service-" in elements.stdout, elements
        assert "KUBE-SERVICES" not in app.in_node(i, "iptables-save", "-t", "nat").stdout
    assert all(n["metadata"]["annotations"]["kubepy.io/proxy-mode"] == "nftables"
               for n in app.json("get", "nodes")["items"])


def test_survives_losing_any_one_pod(app: Lab):
    ips = node_ips(app)
    for selector in ("app=web", "app=redis"):
        victim = app.json("get", "pods", "-l", selector)["items"][0]["metadata"]["name"]
        app.kubectl("delete", "pod", victim, "--wait=false")
        wait_for(lambda: answers(ips), 90, f"the app answering after deleting {victim}")
        wait_for(lambda: victim not in app.kubectl("get", "pods", "-o", "name").stdout, 60, f"{victim} gone")


class Poller(threading.Thread):
    """Asks the app over and over, round-robin over the nodes, and counts failures."""

    def __init__(self, ips: list[str]) -> None:
        super().__init__(daemon=True)
        self.ips, self.ok, self.failed, self.versions = ips, 0, [], set()
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            ip = self.ips[i % len(self.ips)]
            i += 1
            try:
                reply = get(ip)
                self.ok += 1
                self.versions.add(reply.split(" on ")[0])
            except OSError as e:
                self.failed.append((ip, repr(e)))
            time.sleep(0.05)


def test_rolling_update_keeps_answering(app: Lab):
    wait_for(lambda: answers(node_ips(app)), 60, "app up")
    poller = Poller(node_ips(app))
    poller.start()
    try:
        app.kubectl("set", "image", "deployment/web", "web=kubepy.local/web:2")
        app.kubectl("rollout", "status", "deployment/web", "--timeout=180s", timeout=200)
        wait_for(lambda: "hello from web v2" in poller.versions and answers(node_ips(app), "hello from web v2"),
                 60, "v2 everywhere")
    finally:
        poller.stop.set()
        poller.join(10)
    assert poller.ok > 20
    assert not poller.failed, f"{len(poller.failed)} of {poller.ok + len(poller.failed)} requests failed " \
                              f"during the rollout: {poller.failed[:5]}"
    assert {"hello from web v1", "hello from web v2"} <= poller.versions
