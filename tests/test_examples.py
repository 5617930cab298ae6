"""examples/: the manifests are valid Kubernetes objects, and their images work.

Fast tests parse the manifests and run them through kubepy's defaulting and
validation (the API server's own), and run the example scripts with the
host's busybox. Slow tests build the images (umoci, Debian packages), import
them into a private containerd and run them in network namespaces the test
makes (``kptest-<rand>``, only lo): Redis answers PING, the web CGI counts
visits in that Redis, the one-shot Job's pod prints primes and exits 0.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from kubepy import kinds
from kubepy.kinds.validation import default_object, validate_object
from kubepy.images import EXAMPLE_IMAGES, JOB_SCRIPT, WEB_CGI, archive_name, build_examples
from tests.kubelet.test_runtime import remove_cgroups

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLURALS = {"Deployment": "deployments", "Service": "services", "Pod": "pods", "Job": "jobs", "CronJob": "cronjobs",
           "DaemonSet": "daemonsets", "StatefulSet": "statefulsets", "PersistentVolumeClaim": "persistentvolumeclaims"}
MANIFESTS = ("web.yaml", "redis.yaml", "job.yaml", "cronjob.yaml", "daemonset.yaml", "statefulset.yaml",
             "redis-persistent.yaml")
PRIMES_20 = "2 3 5 7 11 13 17 19 23 29 31 37 41 43 47 53 59 61 67 71"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def objects(name: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in load(name)}


# -- manifests (fast) -------------------------------------------------------

@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_passes_defaulting_and_validation(name: str):
    docs = load(name)
    assert docs
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) in {("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Pod"),
                                                    ("batch/v1", "Job"), ("batch/v1", "CronJob"),
                                                    ("apps/v1", "DaemonSet"), ("apps/v1", "StatefulSet"),
                                                    ("v1", "PersistentVolumeClaim")}
        if doc["kind"] == "Job":   # what the API server does first: the selector from the Job's UID
            doc["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
            kinds.by_kind("batch", "Job").strategy.prepare_create(doc)
        default_object(PLURALS[doc["kind"]], doc)
        validate_object(PLURALS[doc["kind"]], doc)   # raises errors.Invalid listing every problem


def _pod_spec(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"] if obj["kind"] in ("Deployment", "Job", "DaemonSet", "StatefulSet") \
        else obj["spec"]


def test_every_example_image_is_one_we_build_and_never_pulled():
    for name in MANIFESTS:
        for obj in load(name):
            if obj["kind"] in ("Service", "PersistentVolumeClaim"):
                continue
            for c in _pod_spec(obj)["containers"]:
                assert c["image"] in EXAMPLE_IMAGES
                assert c["imagePullPolicy"] == "IfNotPresent"


def _service_matches_deployment(svc: dict, deploy: dict) -> dict:
    """The Service selects the Deployment's pods and its targetPort names a container port."""
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [port] = svc["spec"]["ports"]
    names = {p["name"]: p["containerPort"] for c in _pod_spec(deploy)["containers"] for p in c.get("ports", [])}
    assert port["targetPort"] in names
    return {"port": port, "container_port": names[port["targetPort"]]}


def test_web_tier():
    objs = objects("web.yaml")
    deploy, svc = objs[("Deployment", "web")], objs[("Service", "web")]
    assert deploy["spec"]["replicas"] == 3
    [c] = _pod_spec(deploy)["containers"]
    assert c["image"] == "kubepy.local/web:1"
    assert {"name": "REDIS_HOST", "value": "redis"} in c["env"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    m = _service_matches_deployment(svc, deploy)
    assert svc["spec"]["type"] == "NodePort"
    assert (m["port"]["port"], m["port"]["nodePort"], m["container_port"]) == (80, 30080, 8080)


def test_redis_backend_is_the_name_the_web_tier_uses():
    objs = objects("redis.yaml")
    deploy, svc = objs[("Deployment", "redis")], objs[("Service", "redis")]
    assert deploy["spec"]["replicas"] == 1
    m = _service_matches_deployment(svc, deploy)
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert (m["port"]["port"], m["container_port"]) == (6379, 6379)
    web = _pod_spec(objects("web.yaml")[("Deployment", "web")])["containers"][0]
    assert {"name": "REDIS_HOST", "value": svc["metadata"]["name"]} in web["env"]


def test_one_shot_job():
    [job] = load("job.yaml")
    assert (job["kind"], job["metadata"]["name"], _pod_spec(job)["restartPolicy"]) == ("Job", "primes", "Never")
    assert job["spec"]["completions"] == 1
    assert [c["image"] for c in _pod_spec(job)["containers"]] == ["kubepy.local/job:1"]


def test_cronjob_every_minute_forbids_overlap():
    [cj] = load("cronjob.yaml")
    assert (cj["kind"], cj["spec"]["schedule"], cj["spec"]["concurrencyPolicy"]) == ("CronJob", "* * * * *", "Forbid")
    assert [c["image"] for c in _pod_spec(cj)["containers"]] == ["kubepy.local/job:1"]


def test_node_agent_runs_everywhere_and_says_where():
    [ds] = load("daemonset.yaml")
    assert (ds["kind"], ds["metadata"]["name"]) == ("DaemonSet", "node-agent")
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    spec = _pod_spec(ds)
    assert {"operator": "Exists"} in spec["tolerations"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_node_agent_script_with_busybox(tmp_path: Path):
    """The agent's loop, with the host's busybox: it names its node, and SIGTERM ends it at once."""
    [ds] = load("daemonset.yaml")
    script = _pod_spec(ds)["containers"][0]["command"][2]
    busybox = shutil.which("busybox") or "/bin/busybox"
    for applet in ("sh", "date", "cat", "sleep", "echo"):
        (tmp_path / applet).symlink_to(busybox)
    env = {"PATH": str(tmp_path), "NODE_NAME": "kubepy-node2", "POD_NAME": "node-agent-x", "INTERVAL": "30"}
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                            executable=str(tmp_path / "sh"))
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("node-agent on kubepy-node2: pod node-agent-x, "), first
        proc.terminate()
        assert proc.wait(timeout=3) == 0
        assert "stopping" in proc.stdout.read()  # type: ignore[union-attr]
    finally:
        proc.kill()


def test_statefulset_example_is_valid_and_each_replica_follows_kv_0_by_name(tmp_path: Path):
    """statefulset.yaml: a valid StatefulSet + headless Service; the start script makes kv-0 the
    primary and every other ordinal a replica of ``kv-0.<serviceName>`` (run with the host's busybox
    and a stand-in redis-server that prints its arguments)."""
    objs = objects("statefulset.yaml")
    sts, svc = objs[("StatefulSet", "kv")], objs[("Service", "kv")]
    default_object("statefulsets", sts)
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    [c] = sts["spec"]["template"]["spec"]["containers"]
    assert (c["image"], c["imagePullPolicy"]) == ("kubepy.local/redis:7", "IfNotPresent")
    assert c["image"] in EXAMPLE_IMAGES
    assert svc["spec"]["ports"][0]["targetPort"] in {p["name"] for p in c["ports"]}
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    shell, script = c["command"][:2], c["command"][2]
    assert shell == ["sh", "-c"]
    for host, want in (("kv-0", "/etc/redis/redis.conf"), ("kv-2", "/etc/redis/redis.conf --replicaof kv-0.kv 6379")):
        out = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=20, check=True,
                             env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOSTNAME": host}).stdout
        assert out.strip() == want


def test_persistent_redis_keeps_its_append_only_file_on_a_claim_of_the_default_class():
    objs = objects("redis-persistent.yaml")
    claim, deploy = objs[("PersistentVolumeClaim", "redis-data")], objs[("Deployment", "redis-persistent")]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class (local-path)
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    [c] = spec["containers"]
    assert c["args"][:2] == ["--appendonly", "yes"] and c["args"][-2:] == ["--dir", "/data"]
    [mount] = c["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert (mount["mountPath"], volume["persistentVolumeClaim"]["claimName"]) == ("/data", "redis-data")
    _service_matches_deployment(objs[("Service", "redis-persistent")], deploy)


def test_archive_names():
    assert [archive_name(r) for r in EXAMPLE_IMAGES] == ["redis-7.tar", "web-1.tar", "web-2.tar", "job-1.tar"]


@pytest.mark.slow
def test_kubectl_accepts_the_manifests(tmp_path: Path):
    """Stock kubectl, with its OpenAPI field validation, and a server-side dry run of every manifest."""
    from tests.e2e.conftest import start_apiserver, stop_apiserver
    srv = start_apiserver(tmp_path / "api")
    try:
        for name in MANIFESTS:
            out = srv.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(EXAMPLES / name)).stdout
            for kind, obj in objects(name):
                assert f"{kind.lower()}/{obj} created (server dry run)" in out.replace(".apps/", "/").replace(".batch/", "/"), out
    finally:
        stop_apiserver(srv)


# -- the images' scripts with the host's busybox (fast) --------------------

def test_primes_script():
    out = subprocess.run(["busybox", "sh", "-c", JOB_SCRIPT], capture_output=True, text=True, timeout=20, check=True)
    assert out.stdout == f"the first 20 primes: {PRIMES_20}\n"


def test_web_cgi_without_redis_says_503(tmp_path: Path):
    """Nothing listens on 127.0.0.1:1, so the CGI reports Redis down (and sends nothing anywhere else)."""
    for applet in ("sh", "hostname", "printf", "timeout", "nc", "sed", "head", "echo"):
        (tmp_path / applet).symlink_to(shutil.which("busybox") or "/bin/busybox")
    env = {"PATH": str(tmp_path), "REDIS_HOST": "127.0.0.1", "REDIS_SERVICE_PORT": "1", "REDIS_PORT": "tcp://127.0.0.1:1"}
    out = subprocess.run(["sh", "-c", WEB_CGI.replace("@VERSION@", "9")], capture_output=True, env=env,
                         timeout=20, check=True, executable=str(tmp_path / "sh")).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("Status: 503") and body.startswith("hello from web v9 on ")
    assert "redis at 127.0.0.1:1 did not answer" in body


# -- the images in a real containerd (slow) --------------------------------

@pytest.fixture(scope="module")
def example_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    t0 = time.monotonic()
    built = build_examples(tmp_path_factory.mktemp("example-images"))
    assert time.monotonic() - t0 < 120
    return built


class Node:
    """A private containerd and a Runtime on it (the kubelet's adapter)."""

    def __init__(self, containerd, runtime, tmp: Path) -> None:
        self.containerd, self.runtime, self.tmp = containerd, runtime, tmp

    def spec(self, cid: str, image: str, **kw):
        from kubepy.kubelet.runtime import ContainerSpec
        kw.setdefault("log_path", str(self.tmp / "logs" / f"{cid}.log"))
        kw.setdefault("cgroups_path", f"/{self.runtime.namespace}/{cid}")
        return ContainerSpec(id=cid, image=image, **kw)

    def log(self, cid: str) -> list[str]:
        """The container's log lines (CRI format: time stream tag message)."""
        path = self.tmp / "logs" / f"{cid}.log"
        if not path.exists():
            return []
        return [line.split(" ", 3)[3] for line in path.read_text().splitlines() if line.count(" ") >= 3]

    async def wait_exit(self, cid: str, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.runtime.exit_status(cid)
            if status is not None:
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"{cid} did not exit; log: {self.log(cid)}")


@pytest.fixture
async def node(example_archives: dict[str, Path]) -> AsyncIterator[Node]:
    from kubepy.kubelet.containerd import Containerd
    from kubepy.kubelet.runtime import Runtime, remove_tree
    tmp = Path(tempfile.mkdtemp(prefix="kpx-", dir="/tmp"))   # short: socket paths ≤ 108 bytes
    ns = "kptest-" + secrets.token_hex(3)
    cd = Containerd(tmp / "ctrd")
    rt = Runtime(cd.socket, namespace=ns, snapshotter=cd.snapshotter, runc_root=cd.runc_root, state_dir=tmp / "rt")
    try:
        await cd.start()
        for ref, archive in example_archives.items():
            assert await rt.import_archive(archive) == [ref]
        yield Node(cd, rt, tmp)
    finally:
        try:
            if not await cd.is_ready():
                await cd.start()
            for c in await rt.list_containers(reap=False):
                await rt.remove(c.id)
        finally:
            await cd.stop()
            remove_tree(tmp / "rt")
            shutil.rmtree(tmp, ignore_errors=True)
            remove_cgroups(ns)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with only lo (up): all traffic stays inside it."""
    name = "kptest-" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(netns: str, *argv: str, stdin: bytes = b"", timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True,
                          timeout=timeout, check=False)


def http_get(netns: str, path: str) -> tuple[str, str]:
    """(status line, body) of GET http://127.0.0.1:8080<path>, from inside ``netns``."""
    req = f"GET {path} HTTP/1.0\r\nHost: web\r\n\r\n".encode()
    out = in_netns(netns, "busybox", "nc", "127.0.0.1", "8080", stdin=req).stdout.decode(errors="replace")
    head, _, body = out.partition("\r\n\r\n")
    return head.split("\r\n", 1)[0], body


async def until(check, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached; last: {last!r}")


def redis_ping(netns: str) -> bool:
    out = in_netns(netns, "busybox", "nc", "127.0.0.1", "6379", stdin=b"PING\r\nQUIT\r\n").stdout
    return out.startswith(b"+PONG\r\n")


async def start_redis(node: Node, netns: str, cid: str = "redis") -> None:
    await node.runtime.run(node.spec(cid, "kubepy.local/redis:7", netns_path=f"/var/run/netns/{netns}",
                                     hostname="redis-0"))
    await until(lambda: redis_ping(netns), what=f"redis PONG (log: {node.log(cid)})")


@pytest.mark.slow
async def test_redis_answers_ping(node: Node, netns: str):
    await start_redis(node, netns)
    proc = await node.runtime.exec("redis", "cli", ["redis-cli", "ping"])
    out, err = await proc.communicate()
    assert (out, proc.returncode) == (b"PONG\n", 0), err
    proc = await node.runtime.exec("redis", "cfg", ["redis-cli", "config", "get", "save"])
    out, _ = await proc.communicate()
    assert out.split() == [b"save"]        # no snapshots: `save ""`
    assert any("Ready to accept connections" in line for line in node.log("redis"))
    await node.runtime.kill("redis", "SIGTERM")
    assert await node.wait_exit("redis", timeout=10) == 0


@pytest.mark.slow
async def test_web_counts_visits_in_redis(node: Node, netns: str):
    web = node.spec("web", "kubepy.local/web:1", netns_path=f"/var/run/netns/{netns}", hostname="web-7d4f9-abcde",
                    env={"REDIS_HOST": "127.0.0.1"})
    await node.runtime.run(web)
    assert await until(lambda: http_get(netns, "/healthz")[0].endswith("200 OK"), what="healthz")
    assert http_get(netns, "/healthz")[1] == "ok\n"           # needs no Redis
    status, body = http_get(netns, "/")
    assert "503" in status and "did not answer" in body

    await start_redis(node, netns)
    for n in (1, 2, 3):
        status, body = http_get(netns, "/")
        assert status.endswith("200 OK"), (status, body)
        assert body == f"hello from web v1 on web-7d4f9-abcde, visits: {n}\n"

    v2 = node.spec("web2", "kubepy.local/web:2", netns_path=f"/var/run/netns/{netns}", hostname="web-v2",
                   env={"REDIS_HOST": "127.0.0.1", "PORT": "8081"})
    await node.runtime.run(v2)
    req = b"GET / HTTP/1.0\r\n\r\n"

    def v2_answer() -> str:
        return in_netns(netns, "busybox", "nc", "127.0.0.1", "8081", stdin=req).stdout.decode().partition(
            "\r\n\r\n")[2]
    assert await until(v2_answer, what="web v2") == "hello from web v2 on web-v2, visits: 4\n"

    assert any(line.endswith(": url:/") for line in node.log("web"))   # httpd -vv: kubectl logs shows requests
    await node.runtime.kill("web", "SIGTERM")                  # the shell at PID 1 handles TERM
    t0 = time.monotonic()
    assert await node.wait_exit("web", timeout=10) == 0
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
async def test_web_finds_redis_by_name(node: Node, netns: str):
    """REDIS_HOST is a name (the image's default, ``redis``), resolved by the C library (here by /etc/hosts)."""
    hosts = node.tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 redis\n")
    await start_redis(node, netns)
    await node.runtime.run(node.spec("web", "kubepy.local/web:1", netns_path=f"/var/run/netns/{netns}",
                                     hostname="web-0", mounts=[(str(hosts), "/etc/hosts", True)]))
    assert await until(lambda: http_get(netns, "/")[1], what="web answer") == "hello from web v1 on web-0, visits: 1\n"


@pytest.mark.slow
async def test_job_prints_primes_and_exits_zero(node: Node):
    await node.runtime.run(node.spec("primes", "kubepy.local/job:1"))
    assert await node.wait_exit("primes") == 0
    assert node.log("primes") == [f"the first 20 primes: {PRIMES_20}"]
    await node.runtime.run(node.spec("primes5", "kubepy.local/job:1", env={"COUNT": "5"}))
    assert await node.wait_exit("primes5") == 0
    assert node.log("primes5") == ["the first 5 primes: 2 3 5 7 11"]
