"""``kubepy kubelet``: makes the pods bound to this node real.

``run_kubelet(config)`` connects to the API server (joining with the
bootstrap token of ``--bootstrap-token-file`` the first time: ``POST
/kubepy/v1/join`` → a node token saved as ``ROOT/kubelet.token`` and
``ROOT/kubelet.kubeconfig``, 0600 in the 0700 root dir, reused on every
later start; tried again with back-off until an API server answers, as
registration is), registers
the Node and keeps its Lease and status fresh (``node``), waits for
``spec.podCIDR``, brings up the bridge, and then runs one ``PodWorker``
(``pods``) per pod of this node, fed by:

- a pod informer (``fieldSelector=spec.nodeName=<node>``): adds, updates
  and deletions mark the pod's worker dirty;
- one single-object watch per ConfigMap and Secret its pods use
  (``kubepy.kubelet.sources``): a change marks the pods using it dirty
  (their volumes are rewritten atomically, ``..data`` scheme);
- containerd's event stream (``ctr events``): an exit or OOM marks the
  owning pod dirty at once;
- a resync every ``sync_frequency`` (every pod dirty, orphans collected).

On start the kubelet adopts what containerd runs (labels name the pod uid,
container and restart count): a healthy pod keeps its containers. Anything
of a pod that no longer exists (containers, pod netns and veth, cgroup,
IPAM entry, pod dir) is removed, and so are shims its containerd leaked
(``shims``: at start, and after containerd came back or its event stream
broke). Stopping the kubelet leaves pods running.

The runtime's health (``runtimestate.RuntimeHealth``: ``ctr version``
every ``runtime_health_interval``, at once when the event stream ends)
decides the node's ``Ready`` with the node agent, and pod workers wait
while containerd does not answer.

For the logs/exec server: ``Kubelet.runtime`` and ``Kubelet.locate``.
The kubelet's own network namespace is the node's (the lab enters it with
``nsenter --net=``): probes and the bridge live there.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from pyroute2 import config as pyroute2_config

from kubepy import bootstraptoken
from kubepy.client import Client, ClientConfig, EventRecorder, Informer, TransportError
from kubepy.client.config import servers_extension
from kubepy.kubelet.cgroups import PodCgroups
from kubepy.kubelet.config import KubeletConfig, add_kubelet_flags, config_from_args
from kubepy.kubelet.ipam import HostLocalIPAM
from kubepy.kubelet.localvolumes import LocalVolumes
from kubepy.kubelet.network import NodeNetwork
from kubepy.kubelet.metrics import KubeletMetrics
from kubepy.kubelet.node import NodeAgent, machine_info
from kubepy.kubelet.pods import (
    LABEL_POD_UID,
    Backoff,
    PodWorker,
)
from kubepy.kubelet.runtime import (
    ImageNotFound,
    Runtime,
    RuntimeError_,
    normalize_image_ref,
)
from kubepy.kubelet.runtimestate import RuntimeHealth
from kubepy.kubelet.sources import ReferencedObjects
from kubepy.kubelet.tokens import TokenManager
from kubepy.kubelet.volumes import unmount_below
from kubepy.kubelet.shims import kill_shim, list_shims, orphan_shims
from kubepy.privatefiles import is_private, narrow_file, private_dir, write_private

log = logging.getLogger(__name__)

# A shim younger than this may belong to a task being created right now (not listed yet).
SHIM_MIN_AGE = 10.0
# Joining: each attempt bounded; between rounds over the servers, 100 ms doubling to 7 s (as registration).
# Only connecting is bounded: once the request is sent the server may act on it, and a second join of
# the same name is refused (a slow answer retried would end the kubelet), so the answer is waited for.
JOIN_ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
JOIN_FIRST_DELAY = 0.1
JOIN_MAX_DELAY = 7.0

__all__ = ["Kubelet", "KubeletConfig", "connect", "main", "run_kubelet"]


# -- connecting -----------------------------------------------------------------

async def connect(config: KubeletConfig) -> Client:
    """A client with this node's credentials (joining with the bootstrap token if needed).

    The node's own credential, once saved, is reused on every start: a
    restarted or rebooted kubelet never joins again (the API server would
    refuse: a name joins once)."""
    private_dir(config.root_dir)
    for path in (config.token_path, config.own_kubeconfig):
        narrow_file(path)
    for path in (config.kubeconfig, config.own_kubeconfig):
        if path is not None and Path(path).exists():
            return Client.from_kubeconfig(str(path), user_agent=f"kubepy-kubelet/{config.node_name}")
    if not config.server:
        raise SystemExit("kubelet: need --kubeconfig, or --server with --bootstrap-token-file")
    ca = Path(config.ca_file).read_bytes() if config.ca_file else None
    token = config.token_path.read_text().strip() if config.token_path.exists() else None
    if not token:
        token = await join(config, ca)
        write_private(config.token_path, token + "\n")
        log.info("joined cluster node=%s server=%s token=%s", config.node_name, config.server, config.token_path)
    servers = _servers(config.server)
    cluster: dict[str, Any] = {"server": servers[0]}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    if len(servers) > 1:  # the client fails over between them (kubepy.client.config)
        cluster["extensions"] = servers_extension(servers)
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "kubelet",
                  "clusters": [{"name": "kubepy", "cluster": cluster}],
                  "users": [{"name": f"system:node:{config.node_name}", "user": {"token": token}}],
                  "contexts": [{"name": "kubelet", "context": {"cluster": "kubepy",
                                                                "user": f"system:node:{config.node_name}"}}]}
    write_private(config.own_kubeconfig, yaml.safe_dump(kubeconfig))
    return Client(ClientConfig(server=servers[0], servers=servers, token=token, ca_data=ca),
                  user_agent=f"kubepy-kubelet/{config.node_name}")


def _servers(flag: str) -> list[str]:
    """``--server``: one API server URL, or several separated by commas."""
    return [u.strip().rstrip("/") for u in flag.split(",") if u.strip()]


async def join(config: KubeletConfig, ca: bytes | None) -> str:
    """``POST /kubepy/v1/join`` with the token in ``--bootstrap-token-file``: this node's new token.

    Tried on each ``--server`` in turn, and again and again while none
    answers (refused, timed out, a 5xx or 429), backing off from
    ``JOIN_FIRST_DELAY`` to ``JOIN_MAX_DELAY`` as registration does: a
    node booting beside its control plane waits for it. One log line per
    failed attempt. A refusal (a 4xx: bad token, the name already joined)
    ends the kubelet at once with the server's message."""
    if config.bootstrap_token_file is None:
        raise SystemExit("kubelet: no kubeconfig, no saved node token and no --bootstrap-token-file")
    try:
        bootstrap = bootstraptoken.read_token_file(config.bootstrap_token_file)
    except ValueError as e:
        raise SystemExit(f"kubelet: {e}") from None
    mode = config.bootstrap_token_file.stat().st_mode
    if not is_private(mode):
        log.warning("bootstrap token file is readable by others path=%s mode=%o (chmod 600 it)",
                    config.bootstrap_token_file, mode & 0o777)
    ctx: ssl.SSLContext | bool = ssl.create_default_context(cadata=ca.decode()) if ca else True
    servers = _servers(config.server)
    delay = JOIN_FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        for i, server in enumerate(servers):   # the first that answers
            url = server + "/kubepy/v1/join"
            try:
                async with aiohttp.ClientSession(timeout=JOIN_ATTEMPT_TIMEOUT) as s, s.post(
                        url, json={"nodeName": config.node_name}, ssl=ctx,
                        headers={"Authorization": f"Bearer {bootstrap}"}) as resp:
                    status, body = resp.status, await resp.text()
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                err = f"{type(e).__name__}: {e}".rstrip(": ")
            else:
                if status < 300:
                    return json.loads(body)["token"]
                if status < 500 and status != 429:
                    raise SystemExit(f"kubelet: join as {config.node_name!r} refused ({status}): "
                                     f"{_status_message(body)}")
                err = f"status {status}: {_status_message(body)}"
            last = i == len(servers) - 1
            log.warning("join failed node=%s server=%s attempt=%d %s err=%r", config.node_name, server, attempt,
                        f"retry_in={delay:.1f}s" if last else f"next={servers[i + 1]}", err)
        await asyncio.sleep(delay)
        delay = min(delay * 2, JOIN_MAX_DELAY)


def _status_message(body: str) -> str:
    """A Status body's ``message`` (the body itself if it is not one)."""
    try:
        return str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        return body


def make_runtime(config: KubeletConfig) -> Runtime:
    """The runtime adapter; snapshotter and runc root as kubepy's Containerd chose them (if it made the socket)."""
    state = Path(config.container_runtime_endpoint).parent
    marker = state / "snapshotter"
    snapshotter = marker.read_text().strip() if marker.exists() else None
    runc_root = str(state / "runc") if (state / "config.toml").exists() else None
    return Runtime(config.container_runtime_endpoint, namespace=config.containerd_namespace,
                   snapshotter=snapshotter, runc_root=runc_root, shim_dir=config.root_dir / "bin",
                   hosts_dir=config.registry_hosts_dir)


async def containerd_version(socket: str, timeout: float = 60.0) -> str:
    """``containerd://<version>``, waiting until containerd answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        proc = await asyncio.create_subprocess_exec("ctr", "--address", socket, "--timeout", "2s", "version",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            server = out.decode().split("Server:", 1)[-1]
            m = re.search(r"Version:\s*(\S+)", server)
            return "containerd://" + (m.group(1).lstrip("v") if m else "unknown")
        if loop.time() > deadline:
            raise SystemExit(f"kubelet: containerd at {socket} not answering: {err.decode().strip()}")
        await asyncio.sleep(0.5)


# -- the kubelet -----------------------------------------------------------------

def _refs(pod: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of the configmaps and secrets a pod uses."""
    ns = (pod.get("metadata") or {}).get("namespace", "")
    spec = pod.get("spec") or {}
    out: set[tuple[str, str, str]] = set()
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            out.add(("configmap", ns, v["configMap"].get("name", "")))
        if "secret" in v:
            out.add(("secret", ns, v["secret"].get("secretName", "")))
        for src in (v.get("projected") or {}).get("sources") or []:
            for key, kind in (("configMap", "configmap"), ("secret", "secret")):
                if src.get(key) is not None:
                    out.add((kind, ns, src[key].get("name", "")))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                out.add(("configmap", ns, src["configMapRef"].get("name", "")))
            if "secretRef" in src:
                out.add(("secret", ns, src["secretRef"].get("name", "")))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                out.add(("configmap", ns, vf["configMapKeyRef"].get("name", "")))
            if "secretKeyRef" in vf:
                out.add(("secret", ns, vf["secretKeyRef"].get("name", "")))
    return out


class Kubelet:
    """The node agent; see the module docstring."""

    def __init__(self, config: KubeletConfig, client: Client, runtime: Runtime,
                 metrics: KubeletMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_pods(self._pod_states)
        self.client = client
        self.runtime = runtime
        self.recorder = EventRecorder(client, component="kubelet", host=config.node_name)
        self.tokens = TokenManager(client)   # projected serviceAccountToken volumes
        from kubepy.kubelet.status import StatusWriter
        self.status = StatusWriter(client)
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.pull_backoff = Backoff(config.image_pull_backoff, config.backoff_max)
        self.workers: dict[str, PodWorker] = {}
        self.container_pod: dict[str, str] = {}
        self._image_ids: dict[str, str] = {}
        self._exit_waiters: dict[str, asyncio.Event] = {}
        self.pods = Informer(client, "pods", field_selector=f"spec.nodeName={config.node_name}")
        # Only what this node's pods reference, one object per watch (the node authorizer allows no more).
        self.configmaps = ReferencedObjects(client, "configmaps", lambda o: self._source_changed("configmap", o))
        self.secrets = ReferencedObjects(client, "secrets", lambda o: self._source_changed("secret", o))
        self._starting: dict[str, dict[str, Any]] = {}  # pods whose sources are being read before their worker starts
        self.services = Informer(client, "services")  # for the Service environment variables
        self.local_volumes = LocalVolumes(client, node_name=config.node_name, root_dir=config.root_dir,
                                          capacity_limit=config.local_storage_capacity)
        self.cgroups = PodCgroups(config.cgroup_root, node=config.node_name)
        info = machine_info()
        self.node_alloc = {"cpu_milli": info["cpu"] * 1000, "memory": info["memory"]}
        self.network: NodeNetwork | None = None
        self.ipam: HostLocalIPAM | None = None
        self.node: NodeAgent | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.runtime_health = RuntimeHealth(self.runtime.status, interval=config.runtime_health_interval,
                                            threshold=config.runtime_down_threshold,
                                            on_change=self._runtime_health_changed,
                                            on_recovered=self.collect_leaked_shims)
        self._shim_recheck: asyncio.Task[None] | None = None

    def stats_collector(self) -> Any:
        """What ``/stats/summary`` and ``/metrics/resource`` read: this node's pod cgroups (kubepy.kubelet.stats)."""
        from kubepy.kubelet.stats import CgroupStatsReader, StatsCollector, pod_refs  # noqa: PLC0415

        cg = self.cgroups
        reader = CgroupStatsReader(mode=cg.mode, v1=cg.v1, v2_root=cg.v2_root)
        return StatsCollector(reader, node_name=self.config.node_name, pod_path=cg.pod_path,
                              pods=lambda: pod_refs(list(self.workers.values())))

    # -- lookups the workers use ------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.configmaps.get(namespace, name)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(namespace, name)

    def list_services(self) -> list[dict[str, Any]]:
        return self.services.cache.list()

    def image_id(self, image: str) -> str:
        return self._image_ids.get(normalize_image_ref(image), "") if image else ""

    async def ensure_image_ids(self, images: list[str]) -> None:
        for image in images:
            if not image:
                continue
            ref = normalize_image_ref(image)
            if ref in self._image_ids:
                continue
            try:
                info = await self.runtime.image_info(ref)
            except (ImageNotFound, RuntimeError_):
                continue
            repo = ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@", 1)[0]
            self._image_ids[ref] = f"{repo}@{info.digest}"

    def _oom_file(self, uid: str) -> Path:
        return self.config.pods_dir / uid / "oom-killed"

    def oom_ids(self, uid: str) -> set[str]:
        try:
            return set(self._oom_file(uid).read_text().split())
        except OSError:
            return set()

    def mark_oom(self, uid: str, cid: str) -> None:
        if cid in self.oom_ids(uid):
            return
        path = self._oom_file(uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(cid + "\n")
        log.info("container oom killed uid=%s container=%s", uid, cid)

    def cgroup_oom(self, uid: str, cid: str) -> bool:
        """Did the kernel OOM-kill in this container's cgroup (read before runc removes it)?"""
        try:
            paths = self.cgroups.paths(uid)
            if "memory" in paths:
                text = (paths["memory"] / cid / "memory.oom_control").read_text()
            else:
                text = (paths["unified"] / cid / "memory.events").read_text()
        except (OSError, ValueError, KeyError):
            return False
        m = re.search(r"^oom_kill (\d+)", text, re.MULTILINE)
        return bool(m and int(m.group(1)) > 0)

    async def wait_exit(self, cid: str, timeout: float) -> bool:
        """Until the container's task exits (events, with a poll as fallback); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        ev = self._exit_waiters.setdefault(cid, asyncio.Event())
        try:
            while True:
                try:
                    if await self.runtime.exit_status(cid) is not None:
                        return True
                except RuntimeError_:
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(left, 0.5))
        finally:
            self._exit_waiters.pop(cid, None)

    def locate(self, namespace: str, pod: str, container: str,
               previous: bool = False) -> tuple[str | None, str | None]:
        """(container id, CRI log file) of a pod's container - the current instance or the one before.

        Synchronous, from the kubelet's last view of the runtime; (None, None)
        when the pod or container is unknown on this node.
        """
        obj = self.pods.cache.get(f"{namespace}/{pod}")
        if obj is None:
            return None, None
        worker = self.workers.get(obj["metadata"]["uid"])
        if worker is None:
            return None, None
        recs = [r for r in worker.records if r.name == container and r.kind != "sandbox"]
        index = -2 if previous else -1
        if len(recs) < -index:
            return None, None
        rec = recs[index]
        log_path = str(worker.log_dir() / container / f"{rec.restart_count}.log")
        return rec.id, log_path

    def pod_netns(self, namespace: str, pod: str) -> tuple[str | None, str] | None:
        """(network namespace path, or None on the host network; uid) of a pod running here."""
        obj = self.pods.cache.get(f"{namespace}/{pod}")
        worker = self.workers.get(obj["metadata"]["uid"]) if obj is not None else None
        if worker is None or worker.sandbox_id is None:
            return None
        return worker.netns_path, obj["metadata"]["uid"]

    def pod_ip(self, namespace: str, pod: str) -> str | None:
        obj = self.pods.cache.get(f"{namespace}/{pod}")
        worker = self.workers.get(obj["metadata"]["uid"]) if obj is not None else None
        return worker.pod_ip if worker is not None and worker.sandbox_id is not None else None

    # -- cleanup ------------------------------------------------------------------------
    async def cleanup_pod(self, uid: str, *, log_dir: Path | None = None) -> None:
        """Remove every trace of a pod on this node. Idempotent."""
        for c in await self.runtime.list_containers(reap=False):
            if c.labels.get(LABEL_POD_UID) == uid:
                await self.runtime.remove(c.id)
                self.container_pod.pop(c.id, None)
        if self.network is not None:
            await asyncio.to_thread(self.network.teardown_pod, uid)
        await asyncio.to_thread(self.cgroups.remove, uid)
        if self.ipam is not None:
            await asyncio.to_thread(self.ipam.release, uid)
        pod_dir = self.config.pods_dir / uid
        # tmpfs volumes and /dev/shm first: rmtree would empty them and stop at the mount points.
        for point in await asyncio.to_thread(unmount_below, pod_dir):
            log.info("unmounted uid=%s path=%s", uid, point)
        await asyncio.to_thread(shutil.rmtree, pod_dir, True)
        self.tokens.forget_pod(uid)
        if log_dir is not None:
            await asyncio.to_thread(shutil.rmtree, log_dir, True)
        else:
            for d in self.config.log_dir.glob(f"*_{uid}") if self.config.log_dir.exists() else []:
                await asyncio.to_thread(shutil.rmtree, d, True)
        log.info("pod cleaned up uid=%s", uid)

    async def collect_orphans(self) -> None:
        """Remove what belongs to pods that no longer exist (must run after the pod informer synced)."""
        assert self.network is not None and self.ipam is not None
        containers = await self.runtime.list_containers(reap=False)
        nets = await asyncio.to_thread(self.network.list_pod_networks)
        cgroups = await asyncio.to_thread(self.cgroups.list_pods)
        ips = await asyncio.to_thread(self.ipam.allocations)
        dirs = [d.name for d in self.config.pods_dir.iterdir()] if self.config.pods_dir.exists() else []
        known = set(self.workers) | set(self._starting)  # after listing: a worker exists before anything of its pod
        orphans = {c.labels[LABEL_POD_UID] for c in containers if c.labels.get(LABEL_POD_UID)} | \
            {n.uid for n in nets if n.uid} | set(cgroups) | set(ips) | set(dirs)
        for uid in sorted(orphans - known):
            log.info("removing orphaned pod uid=%s", uid)
            try:
                await self.cleanup_pod(uid)
            except Exception as e:  # noqa: BLE001 - try the others, and again at the next resync
                log.warning("orphan cleanup failed uid=%s err=%s", uid, e)
        for n in nets:
            if not n.uid:
                await asyncio.to_thread(self.network.teardown_pod, n)

    async def collect_leaked_shims(self) -> None:
        """Kill the shims of this kubelet's containerd whose task containerd does not know (see ``shims``)."""
        tasks = await self.runtime.task_ids()   # before listing shims: a task created meanwhile is younger
        shims = await asyncio.to_thread(list_shims)
        orphans, young = orphan_shims(shims, address=self.runtime.socket, namespace=self.runtime.namespace,
                                      tasks=tasks, now=time.time(), min_age=SHIM_MIN_AGE)
        for s in orphans:
            killed = await asyncio.to_thread(kill_shim, s)
            if killed:
                log.info("leaked shim killed pid=%d id=%s namespace=%s address=%s processes=%d",
                         s.pid, s.id, s.namespace, s.address, killed)
        if young and (self._shim_recheck is None or self._shim_recheck.done()):
            wait = max(SHIM_MIN_AGE - (time.time() - max(s.started for s in young)), 0.0) + 0.5
            self._shim_recheck = asyncio.create_task(self._recheck_shims(wait), name="kubelet:shim-recheck")

    async def _recheck_shims(self, wait: float) -> None:
        await asyncio.sleep(wait)
        try:
            await self.collect_leaked_shims()
        except Exception as e:  # noqa: BLE001 - the next containerd recovery looks again
            log.warning("leaked shim collection failed err=%s", e)

    def _runtime_health_changed(self) -> None:
        if self.node is not None:
            self.node.poke()

    def _pod_states(self) -> list[tuple[bool, list[bool]]]:
        """(sandbox running, [each container running]) for every pod of this node (kubelet_running_*)."""
        states = []
        for w in list(self.workers.values()):
            records = list(w.records)
            states.append((any(r.running for r in records if r.kind == "sandbox"),
                           [r.running for r in records if r.kind != "sandbox"]))
        return states

    def worker_done(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]

    # -- informer handlers -------------------------------------------------------------------
    def _pod_event(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        self._want_sources(extra=pod)
        worker = self.workers.get(uid)
        if worker is not None:
            worker.set_pod(pod)
        elif uid in self._starting:
            self._starting[uid] = pod  # the newest is what the worker starts with
        else:
            self._starting[uid] = pod
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self._start_worker(uid), name=f"kubelet:start:{uid}"))

    async def _start_worker(self, uid: str) -> None:
        """A new pod's worker starts once the Secrets and ConfigMaps it uses have been read."""
        pod = self._starting.get(uid)
        if pod is not None:
            refs = _refs(pod)
            await asyncio.gather(
                self.configmaps.synced([(ns, n) for k, ns, n in refs if k == "configmap"], timeout=10.0),
                self.secrets.synced([(ns, n) for k, ns, n in refs if k == "secret"], timeout=10.0))
        pod = self._starting.pop(uid, None)
        if pod is None or uid in self.workers:
            return
        worker = PodWorker(self, uid, pod)
        self.workers[uid] = worker
        worker.start()

    def _want_sources(self, extra: dict[str, Any] | None = None, gone: str | None = None) -> None:
        pods = [w.pod for u, w in self.workers.items() if w.pod is not None and u != gone]
        pods += [p for u, p in self._starting.items() if u != gone]
        if extra is not None:
            pods.append(extra)
        refs = set().union(*(_refs(p) for p in pods)) if pods else set()
        self.configmaps.want((ns, n) for k, ns, n in refs if k == "configmap")
        self.secrets.want((ns, n) for k, ns, n in refs if k == "secret")

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        self._starting.pop(uid, None)
        worker = self.workers.get(uid)
        if worker is not None:
            worker.set_pod(None)
        self._want_sources(gone=uid)

    def _source_changed(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        for w in self.workers.values():
            if w.pod is not None and key in _refs(w.pod):
                w.mark_dirty()

    # -- loops ----------------------------------------------------------------------------
    async def _runtime_events(self) -> None:
        while True:
            try:
                async for ev in self.runtime.events():
                    uid = self.container_pod.get(ev.container_id)
                    if ev.kind == "oom" and uid:
                        self.mark_oom(uid, ev.container_id)
                    if ev.kind == "exit" and ev.exec_id is None:
                        waiter = self._exit_waiters.get(ev.container_id)
                        if waiter is not None:
                            waiter.set()
                    if uid and uid in self.workers and ev.kind in ("exit", "oom") and ev.exec_id is None:
                        self.workers[uid].mark_dirty()
            except Exception as e:  # noqa: BLE001 - containerd restarted: subscribe again
                log.warning("runtime event stream failed err=%s", e)
            # The stream ends when containerd dies: check its health now, and after it is
            # back look for shims it may have leaked.
            self.runtime_health.poke(restarted=True)
            await asyncio.sleep(1.0)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_frequency)
            for w in list(self.workers.values()):
                w.mark_dirty()
            try:
                await self.collect_orphans()
            except Exception as e:  # noqa: BLE001
                log.warning("orphan collection failed err=%s", e)

    async def run(self, stop: asyncio.Event) -> None:
        c = self.config
        for d in (c.root_dir, c.pods_dir, c.ipam_dir, c.log_dir):
            Path(d).mkdir(parents=True, exist_ok=True)
        version = await containerd_version(c.container_runtime_endpoint)
        self.runtime_health.mark_ok()
        try:
            await self.collect_leaked_shims()
        except Exception as e:  # noqa: BLE001 - not fatal: looked for again after containerd restarts
            log.warning("leaked shim collection failed err=%s", e)
        self.node = NodeAgent(self.client, c, runtime_version=version, runtime_errors=self.runtime_health.errors,
                              images=self.runtime.node_images)
        self._tasks.append(asyncio.create_task(self.runtime_health.run(), name="kubelet:runtime-health"))
        if c.register_node:
            await self.node.register()
        self._tasks.append(asyncio.create_task(self.node.run_lease(), name="kubelet:lease"))
        self._tasks.append(asyncio.create_task(self.node.run_status(), name="kubelet:node-status"))
        cidr = await _until(stop, self.node.wait_pod_cidr())
        if cidr is None:
            return await self.shutdown()
        self.network = NodeNetwork(bridge=c.bridge, pod_cidr=cidr, node=c.node_name)
        await asyncio.to_thread(self.network.ensure_bridge)
        self.ipam = HostLocalIPAM(c.ipam_dir, cidr)
        await asyncio.to_thread(self.cgroups.ensure_parent)
        self._tasks.append(asyncio.create_task(self._runtime_events(), name="kubelet:runtime-events"))
        self._tasks.append(asyncio.create_task(self.services.run(), name="kubelet:services"))
        await self.local_volumes.start()  # claims, node-local volumes, published capacity
        # Pods start only once the Services are known: their variables are fixed at container start.
        await self.services.wait_synced()
        self.pods.add_handler(self._pod_event, lambda _old, new: self._pod_event(new), self._pod_deleted)
        self._tasks.append(asyncio.create_task(self.pods.run(), name="kubelet:pods"))
        await self.pods.wait_synced()
        await self.collect_orphans()
        self.node.is_ready = True
        try:
            await self.node.update_status()
        except TransportError as e:
            # Not fatal: the status loop reports Ready on its next beat.
            log.warning("node ready status not written node=%s err=%s", c.node_name, e)
        log.info("kubelet ready node=%s pod_cidr=%s pods=%d", c.node_name, cidr, len(self.workers))
        self._tasks.append(asyncio.create_task(self._resync(), name="kubelet:resync"))
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the kubelet's loops and workers; pods keep running."""
        if self._shim_recheck is not None:
            self._tasks.append(self._shim_recheck)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.local_volumes.stop()
        await asyncio.gather(*(w.stop() for w in list(self.workers.values())), return_exceptions=True)
        await asyncio.gather(self.configmaps.stop(), self.secrets.stop())
        await self.recorder.stop()
        await self.client.close()
        log.info("kubelet stopped node=%s", self.config.node_name)


async def _until(stop: asyncio.Event, coro: Any) -> Any:
    """``coro``'s result, or None when ``stop`` is set first."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopper.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _connect_until(stop: asyncio.Event, config: KubeletConfig) -> Client | None:
    """``connect``, or None when ``stop`` is set first. Its ``SystemExit`` (join refused, no
    token) is raised here, in the caller's task: raised in a task of its own it would escape
    the event loop with a "never retrieved" traceback."""
    async def attempt() -> tuple[Client | None, SystemExit | None]:
        try:
            return await connect(config), None
        except SystemExit as e:
            return None, e

    got = await _until(stop, attempt())
    if got is None:
        return None
    client, refused = got
    if refused is not None:
        raise refused
    return client


async def run_kubelet(config: KubeletConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run the kubelet until ``stop`` is set (SIGTERM/SIGINT when run by ``main``)."""
    # noqa: PLC0415 - keeps `import kubepy.kubelet.kubelet` light
    from kubepy.kubelet.auth import KubeletAuth  # noqa: PLC0415
    from kubepy.kubelet.server import KubeletServer  # noqa: PLC0415
    from kubepy.kubelet.servingcert import ensure_serving_cert  # noqa: PLC0415

    from kubepy.kubelet.metrics import instrument_runtime  # noqa: PLC0415
    from kubepy.metrics import new_registry  # noqa: PLC0415

    stop = stop or asyncio.Event()
    client = await _connect_until(stop, config)   # joining waits for the API server: a stop ends it
    if client is None:
        log.info("kubelet stopped before it connected node=%s", config.node_name)
        return
    metrics = KubeletMetrics(new_registry())   # served as /metrics on :10250 (nodes/metrics)
    kubelet = Kubelet(config, client, instrument_runtime(make_runtime(config), metrics), metrics)
    # The API server relays kubectl logs/exec here with its own client certificate; every caller is
    # authenticated (CA, TokenReview) and authorized (SubjectAccessReview) by kubepy.kubelet.auth.
    ca = client.config.ca_data
    pki = Path(config.root_dir) / "pki"
    serving = None
    if ca:
        try:
            serving = await ensure_serving_cert(client, pki, node_name=config.node_name, address=config.node_ip,
                                                ca_pem=ca)
        except Exception as e:  # noqa: BLE001 - serve anyway; the API server will refuse the self-signed one
            log.error("serving certificate not signed node=%s err=%s (the API server cannot verify this kubelet: "
                      "kubectl logs/exec will fail until it is)", config.node_name, e)
    server = KubeletServer(kubelet, node_name=config.node_name,
                           auth=KubeletAuth(client, node_name=config.node_name, ca_pem=ca), client_ca=ca,
                           serving_cert=serving, cert_dir=pki, address=config.node_ip, port=config.port,
                           registry=metrics.registry, stats=kubelet.stats_collector(),
                           memory_capacity=kubelet.node_alloc["memory"])
    await server.start()
    try:
        await kubelet.run(stop)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubepy kubelet", description="kubepy's node agent")
    add_kubelet_flags(p)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = config_from_args(args)
    pyroute2_config.disable_mp_signal = True   # forked pyroute2 helpers die of SIGTERM, as meant

    async def run() -> None:
        from kubepy.children import use_pidfd_child_watcher

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        use_pidfd_child_watcher(loop)   # the kubelet runs `ctr` for everything
        main_pid = os.getpid()

        def on_signal(signum: int, _frame: object) -> None:
            # Not loop.add_signal_handler: pyroute2 forks helpers (pod netns work)
            # and stops them with SIGTERM; a forked child shares asyncio's wakeup
            # fd, so the parent would read the child's signal as its own.
            if os.getpid() != main_pid:
                os._exit(128 + signum)
            # Nothing else here: the handler runs between any two bytecodes of the main thread, also
            # inside logging's write to stderr, where a log call raises "reentrant call" and the stop
            # was lost (systemd then killed the kubelet after TimeoutStopSec, leaving its `ctr events`).
            loop.call_soon_threadsafe(stopping, signum)

        def stopping(signum: int) -> None:
            log.info("kubelet stopping signal=%s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        from kubepy.healthz import with_loop_health

        bind = f"{config.healthz_bind_address}:{config.healthz_port}" if config.healthz_port else None
        await with_loop_health(run_kubelet(config, stop=stop), bind=bind, required=False)

    from kubepy.daemon import run as run_daemon

    run_daemon(run(), name="kubelet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
