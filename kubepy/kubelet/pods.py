"""One pod made real: ``PodWorker`` reconciles a pod against what containerd holds.

Each pod bound to the node has one worker (an asyncio task) that sleeps
until its pod is marked dirty (an informer event, a runtime exit/OOM
event, a probe verdict, a timer or the periodic resync) and then runs
``sync`` - level-triggered: it reads the runtime's containers of the pod
(labels say which pod uid, container name and restart count) and does the
next steps towards the pod spec. One slow pod never blocks another.

``sync`` of a live pod: sandbox (IPAM address → pod netns and veth →
pod cgroup → /etc files and the pod's /dev/shm tmpfs → the sandbox
container), then volumes (``volumes``: one setup function per type; an
emptyDir over its sizeLimit evicts the pod as upstream's eviction manager
does), then the
ephemeral containers (``kubectl debug``: started once, never restarted, not
even in a new sandbox, and not waiting for init containers), then init
containers one at a time, each to exit 0, then the app containers;
restarts per ``restartPolicy`` with Kubernetes' crash-loop back-off (10s
doubling to 5 min, forgotten after 10 min without a restart); liveness
and startup probe failures kill the container. A pod with a
``deletionTimestamp`` (or gone from the API) is stopped gracefully
(preStop exec hooks, SIGTERM, SIGKILL at the end of the grace period),
then every trace is removed (containers and snapshots, netns, cgroup,
IPAM entry, pod dir, logs) and the pod is finally deleted with
``gracePeriodSeconds=0`` and a uid precondition.

The sandbox is a container running the infra image's ``sleep`` (busybox:
``--pod-infra-container-image``): it joins the pod netns and owns the
pod's IPC and UTS namespaces (hostname); the other containers join them by
``/proc/<sandbox pid>/ns/...``. If the sandbox dies, every container of the
pod is removed and the pod starts again from its sandbox (as Kubernetes
does when a sandbox changes). Each container keeps its own PID namespace,
except an ephemeral container with ``targetContainerName``: it joins its
target's (so ``ps`` in it shows the target's processes).

Pure pieces (unit-tested): ``Backoff``, ``resolve_env``, ``expand``,
``should_restart``, ``container_id_for``, ``pod_resources``.

Errors (defined in ``poderrors``)::

    PodError
     ├── ConfigError     CreateContainerConfigError: env/volume source missing
     │   └── UnsupportedVolume  a volume type this kubelet can't provide
     └── MountError      FailedMount: a volume could not be set up
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepy.meta.quantity import bytes_value, cpu_millis
from kubepy.client import ConflictError, NotFoundError
from kubepy.kubelet.podfiles import write_pod_files
from kubepy.kubelet.poderrors import ConfigError, MountError, PodError, UnsupportedVolume
from kubepy.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeWorker
from kubepy.kubelet.runtime import (
    CREATED,
    PAUSED,
    RUNNING,
    STOPPED,
    ContainerInfo,
    ContainerSpec,
    ImagePullError,
    RuntimeError_,
    kill_exec,
)
from kubepy.kubelet.status import (
    ContainerRecord,
    ContainerView,
    PodStatusInput,
    build_pod_status,
    is_terminal,
    now_rfc3339,
)
from kubepy.kubelet.svcenv import service_env
from kubepy.kubelet.volumes import (
    VolumeContext,
    container_mounts,
    emptydir_over_limit,
    emptydir_usage,
    ensure_shm,
    projection,
    setup_volumes,
    write_atomic,
)

log = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "ConfigError",
    "MountError",
    "UnsupportedVolume",
    "PodError",
    "PodWorker",
    "container_id_for",
    "expand",
    "pod_resources",
    "record_from_info",
    "projection",
    "resolve_env",
    "should_restart",
    "write_atomic",
]

LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"
LABEL_KIND = "io.kubepy.container.kind"
LABEL_CREATED_AT = "io.kubepy.created-at"
LABEL_LOG_PATH = "io.kubernetes.container.logpath"
SANDBOX_NAME = "POD"
SANDBOX, INIT, APP, EPHEMERAL = "sandbox", "init", "app", "ephemeral"
SANDBOX_COMMAND = ["sleep", "2147483647"]


# -- pure helpers --------------------------------------------------------------

class Backoff:
    """Kubernetes' flowcontrol.Backoff keyed by string, on wall-clock seconds.

    ``next`` is called when something is (re)started; ``remaining`` says how
    long to wait after an event (a container's exit) before the next start.
    An entry not updated for 2 × ``maximum`` is forgotten (so a container
    that ran 10 minutes starts again at ``initial``).
    """

    def __init__(self, initial: float = 10.0, maximum: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.initial, self.maximum, self.clock = initial, maximum, clock
        self._entries: dict[str, tuple[float, float]] = {}   # key -> (delay, last update)

    def _live(self, key: str, at: float) -> tuple[float, float] | None:
        e = self._entries.get(key)
        if e is None or at - e[1] > 2 * self.maximum:
            return None
        return e

    def next(self, key: str) -> float:
        now = self.clock()
        e = self._live(key, now)
        delay = self.initial if e is None else min(e[0] * 2, self.maximum)
        self._entries[key] = (delay, now)
        return delay

    def get(self, key: str) -> float:
        e = self._entries.get(key)
        return e[0] if e else 0.0

    def remaining(self, key: str, event_time: float) -> float:
        e = self._live(key, event_time)
        if e is None:
            return 0.0
        return max(0.0, e[0] - (self.clock() - event_time))

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for k in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[k]


def should_restart(policy: str, exit_code: int | None) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


_ID_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def container_id_for(namespace: str, pod: str, container: str) -> str:
    """A readable, unique containerd id: ``<ns>_<pod>_<container>_<hex8>`` (≤ 76 chars).

    containerd wants ``[A-Za-z0-9]+([._-][A-Za-z0-9]+)*``: each part keeps its letters and
    digits with one ``-`` for every run of anything else (a pod ``a--b`` or one cut after
    a ``-`` at 20 characters, as a ReplicaSet's pods often are), none at either end."""
    parts = [_ID_SEPARATORS.sub("-", p)[:20].strip("-") or "x" for p in (namespace, pod, container)]
    return "_".join([*parts, secrets.token_hex(4)])


def _parse_time(ts: str | None) -> float:
    if not ts:
        return time.time()
    try:
        text = ts.rstrip("Z")
        if "." in text:
            base, frac = text.split(".", 1)
            text = f"{base}.{frac[:6]}"
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return time.time()


def _precise_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR.sub(sub, text)


def _field_ref(path: str, pod: dict[str, Any], *, pod_ip: str, host_ip: str, node_name: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName") or node_name,
              "spec.serviceAccountName": spec.get("serviceAccountName", ""), "status.podIP": pod_ip,
              "status.podIPs": pod_ip, "status.hostIP": host_ip, "status.hostIPs": host_ip}
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _resource_field(ref: dict[str, Any], container: dict[str, Any], node_alloc: dict[str, int]) -> str:
    resource = ref.get("resource", "")
    section, _, what = resource.partition(".")
    res = (container.get("resources") or {}).get(section) or {}
    divisor = ref.get("divisor") or "1"
    if what == "cpu":
        milli = cpu_millis(res["cpu"]) if "cpu" in res else node_alloc.get("cpu_milli", 0)
        return str(math.ceil(milli / max(1, cpu_millis(divisor))))
    if what in ("memory", "ephemeral-storage"):
        value = bytes_value(res[what]) if what in res else node_alloc.get(what, 0)
        return str(math.ceil(value / max(1, bytes_value(divisor))))
    raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")


def _b64(value: str) -> str:
    return base64.b64decode(value).decode(errors="replace")


def resolve_env(container: dict[str, Any], pod: dict[str, Any], *, pod_ip: str, host_ip: str, node_name: str,
                get_configmap: Callable[[str, str], dict[str, Any] | None],
                get_secret: Callable[[str, str], dict[str, Any] | None],
                node_alloc: dict[str, int] | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment: ``base`` (the Service variables), then ``envFrom``, then ``env``
    (later wins), ``$(VAR)`` expanded."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = dict(base or {})
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        if "configMapRef" in src:
            ref = src["configMapRef"]
            cm = get_configmap(ns, ref.get("name", ""))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref.get("name")}" not found')
            for k, v in (cm.get("data") or {}).items():
                env[prefix + k] = v
        elif "secretRef" in src:
            ref = src["secretRef"]
            sec = get_secret(ns, ref.get("name", ""))
            if sec is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name")}" not found')
            for k, v in (sec.get("data") or {}).items():
                env[prefix + k] = _b64(v)
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        vf = item["valueFrom"] or {}
        if "fieldRef" in vf:
            env[name] = _field_ref(vf["fieldRef"].get("fieldPath", ""), pod, pod_ip=pod_ip, host_ip=host_ip,
                                   node_name=node_name)
        elif "resourceFieldRef" in vf:
            env[name] = _resource_field(vf["resourceFieldRef"], container, node_alloc or {})
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            is_cm = "configMapKeyRef" in vf
            ref = vf["configMapKeyRef" if is_cm else "secretKeyRef"]
            kind = "configmap" if is_cm else "secret"
            obj = (get_configmap if is_cm else get_secret)(ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{ref.get("name")}" not found')
            data = obj.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {ref.get('key')} in "
                                  f"{'ConfigMap' if is_cm else 'Secret'} {ns}/{ref.get('name')}")
            env[name] = data[ref["key"]] if is_cm else _b64(data[ref["key"]])
    return env


@dataclass
class PodResources:
    cpu_request_milli: int = 0
    cpu_limit_milli: int | None = None
    memory_limit: int | None = None


def pod_resources(spec: dict[str, Any]) -> PodResources:
    """Pod-level cgroup values: sums over app containers, at least the largest init container.

    A limit is set only when every container has one (otherwise the pod is unbounded)."""
    def one(c: dict[str, Any]) -> tuple[int, int | None, int | None]:
        r = c.get("resources") or {}
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        cpu_req = cpu_millis(req["cpu"]) if "cpu" in req else (cpu_millis(lim["cpu"]) if "cpu" in lim else 0)
        return (cpu_req, cpu_millis(lim["cpu"]) if "cpu" in lim else None,
                bytes_value(lim["memory"]) if "memory" in lim else None)

    apps = [one(c) for c in spec.get("containers") or []]
    inits = [one(c) for c in spec.get("initContainers") or []]
    req = sum(a[0] for a in apps)
    cpu_lim = sum(a[1] for a in apps) if apps and all(a[1] is not None for a in apps) else None  # type: ignore[misc]
    mem_lim = sum(a[2] for a in apps) if apps and all(a[2] is not None for a in apps) else None  # type: ignore[misc]
    for i in inits:
        req = max(req, i[0])
        cpu_lim = None if cpu_lim is None or i[1] is None else max(cpu_lim, i[1])
        mem_lim = None if mem_lim is None or i[2] is None else max(mem_lim, i[2])
    return PodResources(req, cpu_lim, mem_lim)


def record_from_info(info: ContainerInfo, oom_ids: set[str]) -> ContainerRecord | None:
    labels = info.labels
    if LABEL_POD_UID not in labels:
        return None
    running = info.status in (RUNNING, CREATED, PAUSED, "PAUSING")
    return ContainerRecord(
        id=info.id, name=labels.get(LABEL_CONTAINER_NAME, ""), kind=labels.get(LABEL_KIND, APP),
        restart_count=int(labels.get(LABEL_RESTART_COUNT, "0") or 0), image=info.image,
        created_at=labels.get(LABEL_CREATED_AT) or now_rfc3339(), running=running,
        exit_code=None if running else info.exit_status,
        finished_at=None if running else info.exited_at, oom_killed=info.id in oom_ids)


# -- the worker -------------------------------------------------------------------

class StartupClock:
    """Where a pod's start-up time goes, stage by stage, from the moment the
    kubelet saw the pod until every app container runs: logged once per pod
    (``pod started ... queue=12ms list=30ms network=45ms ...``) so the cost is
    visible without a profiler (bench/kubelet.py prints p50/p99 per stage)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.first_sync: float | None = None
        self.spent: dict[str, float] | None = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.spent is None:
            yield
            return
        t = time.monotonic()
        try:
            yield
        finally:
            if self.spent is not None:
                self.spent[name] = self.spent.get(name, 0.0) + time.monotonic() - t

    def line(self) -> str | None:
        """The stages once, when the pod has started; None before and after."""
        if self.spent is None:
            return None
        spent, self.spent = self.spent, None
        now = time.monotonic()
        parts = [f"total={(now - self.t0) * 1000:.0f}ms",
                 f"queue={((self.first_sync or now) - self.t0) * 1000:.0f}ms"]
        parts += [f"{k}={v * 1000:.0f}ms" for k, v in spent.items()]
        return " ".join(parts)


class PodWorker:
    """Owns one pod (by uid) for its whole life on this node."""

    def __init__(self, kubelet: Any, uid: str, pod: dict[str, Any] | None) -> None:
        self.k = kubelet
        self.uid = uid
        self.pod = pod
        self.dirty = asyncio.Event()
        self.dirty.set()
        self.records: list[ContainerRecord] = []
        self.waiting: dict[str, tuple[str, str]] = {}
        self.probes: dict[str, list[ProbeWorker]] = {}
        self.sandbox_id: str | None = None
        self.pod_ip: str | None = None
        self.netns_path: str | None = None
        self.start_time: str | None = None
        self.kill_deadline: float | None = None
        self.message: tuple[str, str] | None = None
        self._wake_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._names = ("", "")
        self.sandbox_pid: int | None = None
        self.cgroup_path = ""
        self.hostname = ""
        self.etc_files: dict[str, Path] = {}
        self.volume_paths: dict[str, Path] = {}
        self.shm_path: str | None = None
        self.evicted: str | None = None     # the eviction message (emptyDir over its sizeLimit)
        self._usage_at = 0.0
        self._pulled_events: set[str] = set()
        self._pull_failed_at: dict[str, float] = {}
        # After the sandbox died (e.g. the node rebooted) the containers start again in a new one,
        # counting on from their last restart count, as Kubernetes does.
        self.restart_floor: dict[str, int] = {}
        self.clock = StartupClock()
        if pod is not None:
            self.set_pod(pod)
            st = pod.get("status") or {}
            self.pod_ip = st.get("podIP")
            self.start_time = st.get("startTime")

    def set_pod(self, pod: dict[str, Any] | None) -> None:
        """The pod as the informer has it now (None: gone from the API)."""
        self.pod = pod
        if pod is not None:
            meta = pod.get("metadata") or {}
            self._names = (meta.get("namespace", ""), meta.get("name", ""))
        self.mark_dirty()

    # -- identity ----------------------------------------------------------
    @property
    def namespace(self) -> str:
        return self._names[0]

    @property
    def name(self) -> str:
        return self._names[1]

    @property
    def pod_dir(self) -> Path:
        return Path(self.k.config.pods_dir) / self.uid

    def log_dir(self) -> Path:
        return Path(self.k.config.log_dir) / f"{self.namespace}_{self.name}_{self.uid}"

    # -- scheduling --------------------------------------------------------
    def mark_dirty(self) -> None:
        self.dirty.set()

    def wake_in(self, seconds: float) -> None:
        at = time.monotonic() + max(0.05, seconds)
        if self._wake_at <= time.monotonic() or at < self._wake_at:
            self._wake_at = at

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"pod:{self.uid}")

    async def stop(self) -> None:
        """Stop working on the pod (the kubelet is shutting down); containers keep running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_probes()

    async def _loop(self) -> None:
        errors = 0
        while True:
            timeout = self._wake_at - time.monotonic() if self._wake_at else None
            if timeout is None or timeout > 0:
                # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel (``stop``) that
                # arrives as the pod is marked dirty, and the worker would outlive the kubelet.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.dirty.wait()
            self.dirty.clear()
            if not self.k.runtime_health.up:
                # As upstream skips pod syncs while the runtime is down: every ctr call would fail.
                await self.k.runtime_health.wait_up()
            self._wake_at = time.monotonic() + self.k.config.sync_frequency
            try:
                finished = await self.sync()
                errors = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                errors += 1
                delay = min(0.5 * 2 ** min(errors, 6), 10.0)
                log.exception("pod sync failed pod=%s/%s uid=%s retry_in=%.1fs", self.namespace,
                              self.name, self.uid, delay)
                self.wake_in(delay)
                continue
            if finished:
                self.k.worker_done(self)
                return

    # -- runtime view --------------------------------------------------------
    async def snapshot(self) -> list[ContainerRecord]:
        rt = self.k.runtime
        infos = [i for i in await rt.list_containers(reap=False) if i.labels.get(LABEL_POD_UID) == self.uid]
        reaped = False
        for info in infos:
            if info.status == STOPPED and info.exit_status is None:
                if self.k.cgroup_oom(self.uid, info.id):
                    self.k.mark_oom(self.uid, info.id)
                with contextlib.suppress(RuntimeError_):
                    await rt.exit_status(info.id)
                reaped = True
        if reaped:
            infos = [i for i in await rt.list_containers() if i.labels.get(LABEL_POD_UID) == self.uid]
        oom = self.k.oom_ids(self.uid)
        recs = [r for r in (record_from_info(i, oom) for i in infos) if r is not None]
        recs.sort(key=lambda r: (r.restart_count, r.created_at))
        for r in recs:
            self.k.container_pod[r.id] = self.uid
        self.records = recs
        return recs

    def instances(self, name: str, kind: str) -> list[ContainerRecord]:
        return [r for r in self.records if r.name == name and r.kind == kind]

    def latest(self, name: str, kind: str) -> tuple[ContainerRecord | None, ContainerRecord | None]:
        inst = self.instances(name, kind)
        return (inst[-1] if inst else None, inst[-2] if len(inst) > 1 else None)

    # -- events ------------------------------------------------------------------
    def event(self, type_: str, reason: str, message: str) -> None:
        if self.pod is None:
            return
        obj = {**self.pod, "kind": "Pod", "apiVersion": "v1"}
        self.k.recorder.event(obj, type_, reason, message)

    def _pod_ref(self) -> str:
        return f"{self.name}_{self.namespace}({self.uid})"

    # -- sync ---------------------------------------------------------------------
    async def sync(self) -> bool:
        """One reconcile pass; True when the pod is gone and the worker may end."""
        pod = self.pod
        if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.clock.spent = None   # never started: nothing to report
            return await self.terminate()
        clock = self.clock
        if clock.first_sync is None:
            clock.first_sync = time.monotonic()
        with clock.stage("list"):
            await self.snapshot()
        base_status = self.k.status.last(self.uid) or pod.get("status") or {}
        if is_terminal(base_status.get("phase")):
            await self._stop_finished()
            await self.write_status()
            return False
        if not self.start_time:
            self.start_time = now_rfc3339()
        self.message = None
        if not await self.ensure_sandbox():
            await self.write_status()
            return False
        with clock.stage("volumes"):
            volumes_ready = await self.ensure_volumes()
        if not volumes_ready:
            await self.write_status()
            return False
        if await self.check_local_storage():
            return False
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        # Before init containers, as Kubernetes: a pod stuck initializing can still be debugged.
        for c in spec.get("ephemeralContainers") or []:
            if self.latest(c["name"], EPHEMERAL)[0] is None:   # never restarted
                await self.start_container(c, EPHEMERAL, 0)
        initialized = True
        for c in spec.get("initContainers") or []:
            latest, _ = self.latest(c["name"], INIT)
            if latest is not None and latest.running:
                initialized = False
                break
            if latest is not None and latest.exit_code == 0:
                self.waiting.pop(c["name"], None)
                continue
            initialized = False
            if latest is None:
                await self.start_container(c, INIT, 0)
            elif policy != "Never":
                await self.restart_with_backoff(c, INIT, latest)
            break
        if initialized:
            for c in spec.get("containers") or []:
                await self.reconcile_app_container(c, policy)
        else:
            for c in spec.get("containers") or []:
                if self.latest(c["name"], APP)[0] is None:
                    self.waiting[c["name"]] = ("PodInitializing", "")
        with clock.stage("list"):
            await self.snapshot()
        await self._sync_probes()
        with clock.stage("status"):
            status = await self.write_status()
        if clock.spent is not None and initialized and all(
                (rec := self.latest(c["name"], APP)[0]) is not None and rec.running
                for c in spec.get("containers") or []):
            pulling = clock.spent.get("image", 0.0)
            log.info("pod started pod=%s/%s uid=%s %s", self.namespace, self.name, self.uid, clock.line())
            metrics = getattr(self.k, "metrics", None)
            if metrics is not None:   # the start-up SLI leaves image pulls out, as upstream's does
                metrics.pod_started(time.monotonic() - clock.t0 - pulling)
        if is_terminal(status.get("phase")):
            self.mark_dirty()   # tear down the sandbox of a finished pod
        return False

    async def reconcile_app_container(self, c: dict[str, Any], policy: str) -> None:
        name = c["name"]
        latest, _ = self.latest(name, APP)
        if latest is None:
            await self.start_container(c, APP, self.restart_floor.get(name, 0))
            return
        if latest.running:
            self.waiting.pop(name, None)
            failed = self._failed_probe(latest.id)
            if failed:
                self.event("Normal", "Killing", f"Container {name} failed {failed.lower()} probe, will be restarted")
                await self._stop_probes(latest.id)
                await self.kill_container(latest, self._grace(c, failed))
                self.mark_dirty()
            return
        if should_restart(policy, latest.exit_code):
            await self.restart_with_backoff(c, APP, latest)
        else:
            self.waiting.pop(name, None)

    async def restart_with_backoff(self, c: dict[str, Any], kind: str, latest: ContainerRecord) -> None:
        name = c["name"]
        key = f"{self.uid}/{name}"
        remaining = self.k.backoff.remaining(key, _parse_time(latest.finished_at))
        if remaining > 0:
            delay = int(self.k.backoff.get(key))
            msg = f"back-off {_fmt_duration(delay)} restarting failed container={name} pod={self._pod_ref()}"
            if self.waiting.get(name, ("",))[0] != "CrashLoopBackOff":
                self.event("Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                                                 f"{self._pod_ref()}")
            self.waiting[name] = ("CrashLoopBackOff", msg)
            self.wake_in(remaining)
            return
        self.k.backoff.next(key)
        await self.start_container(c, kind, latest.restart_count + 1)

    def _grace(self, c: dict[str, Any], probe_kind: str) -> float:
        probe = c.get({"Liveness": "livenessProbe", "Startup": "startupProbe"}.get(probe_kind, ""), {}) or {}
        if probe.get("terminationGracePeriodSeconds") is not None:
            return float(probe["terminationGracePeriodSeconds"])
        return float(((self.pod or {}).get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # -- sandbox ---------------------------------------------------------------------
    def _host_network(self) -> bool:
        return bool(((self.pod or {}).get("spec") or {}).get("hostNetwork"))

    async def ensure_sandbox(self) -> bool:
        k, pod = self.k, self.pod
        assert pod is not None
        sandboxes = [r for r in self.records if r.kind == SANDBOX]
        live = next((r for r in reversed(sandboxes) if r.running), None)
        if live is not None and live.id == self.sandbox_id:
            return True
        recreated = False
        if live is None and sandboxes or (live is None and any(r.kind != SANDBOX for r in self.records)):
            # The sandbox died (or vanished): start the pod again from a new one.
            log.info("sandbox gone, recreating pod=%s/%s uid=%s", self.namespace, self.name, self.uid)
            recreated = True
            await self._stop_probes()
            for r in self.records:
                if r.kind == APP:
                    self.restart_floor[r.name] = max(self.restart_floor.get(r.name, 0), r.restart_count + 1)
            for r in self.records:
                if r.kind == EPHEMERAL:
                    # Never restarted, not even in the new sandbox: it stays (and reports) as it ended.
                    if r.running:
                        await self.kill_container(r, 0.0)
                    continue
                await k.runtime.remove(r.id)
            self.records = []
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        hostname = (spec.get("hostname") or meta["name"])[:63].rstrip("-.")
        res = pod_resources(spec)
        try:
            clock = self.clock
            with clock.stage("network"):
                if self._host_network():
                    self.pod_ip, self.netns_path = k.config.node_ip, None
                else:
                    ip = await asyncio.to_thread(k.ipam.allocate, self.uid,
                                                 name=f"{meta['namespace']}/{meta['name']}")
                    net = await asyncio.to_thread(k.network.setup_pod, namespace=meta["namespace"],
                                                  name=meta["name"], uid=self.uid, ip=ip)
                    self.pod_ip, self.netns_path = net.ip, net.netns_path
            with clock.stage("cgroup"):
                self.cgroup_path = await asyncio.to_thread(
                    k.cgroups.create, self.uid, cpu_request_milli=res.cpu_request_milli,
                    cpu_limit_milli=res.cpu_limit_milli, memory_limit_bytes=res.memory_limit)
            with clock.stage("files"):
                self.etc_files = await asyncio.to_thread(
                    write_pod_files, self.pod_dir, hostname=hostname, pod_ip=self.pod_ip or "",
                    namespace=meta["namespace"], cluster_domain=k.config.cluster_domain,
                    dns_server=k.config.cluster_dns, dns_policy=spec.get("dnsPolicy", "ClusterFirst"),
                    host_aliases=spec.get("hostAliases") or [], dns_config=spec.get("dnsConfig"),
                    subdomain=spec.get("subdomain") or "")
                self.hostname = hostname
                self.shm_path = None if spec.get("hostIPC") else str(await asyncio.to_thread(ensure_shm,
                                                                                             self.pod_dir))
            if live is None:
                image = k.config.pod_infra_container_image
                with clock.stage("image"):
                    present = await k.runtime.image_exists(image)
                if not present:
                    raise PodError(f'pod infra image "{image}" is not present (import it; no pull is attempted)')
                cid = container_id_for(meta["namespace"], meta["name"], "pause")
                labels = self._labels(SANDBOX_NAME, SANDBOX, 0)
                with clock.stage("sandbox"):
                    await k.runtime.run(ContainerSpec(
                        id=cid, image=image, command=SANDBOX_COMMAND, netns_path=self.netns_path,
                        uts_ns_path=f"/proc/{os.getpid()}/ns/uts" if self._host_network() else None,
                        hostname=None if self._host_network() else hostname, shm_path=self.shm_path,
                        cgroups_path=f"{self.cgroup_path}/{cid}", labels=labels))
                k.container_pod[cid] = self.uid
                log.info("sandbox started pod=%s/%s uid=%s container=%s ip=%s", self.namespace, self.name,
                         self.uid, cid, self.pod_ip)
                self.sandbox_id = cid
                if recreated:
                    # Re-created: what the old sandbox left (ephemeral containers are kept) must be
                    # seen before this sync decides what to start. A first start needs no listing:
                    # the sync's closing one shows the sandbox.
                    with clock.stage("list"):
                        await self.snapshot()
            else:
                self.sandbox_id = live.id
                log.info("sandbox adopted pod=%s/%s uid=%s container=%s ip=%s", self.namespace, self.name,
                         self.uid, live.id, self.pod_ip)
        except (RuntimeError_, PodError, OSError) as e:
            self.sandbox_id = None
            self.message = ("FailedCreatePodSandBox", str(e))
            self.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
            log.warning("sandbox failed pod=%s/%s uid=%s err=%s", self.namespace, self.name, self.uid, e)
            self.wake_in(5.0)
            return False
        with self.clock.stage("task-pid"):
            self.sandbox_pid = await k.runtime.task_pid(self.sandbox_id)
        return True

    def _labels(self, name: str, kind: str, restart: int, log_path: str = "") -> dict[str, str]:
        labels = {LABEL_POD_UID: self.uid, LABEL_POD_NAME: self.name, LABEL_POD_NAMESPACE: self.namespace,
                  LABEL_CONTAINER_NAME: name, LABEL_RESTART_COUNT: str(restart), LABEL_KIND: kind,
                  LABEL_CREATED_AT: _precise_now()}
        if log_path:
            labels[LABEL_LOG_PATH] = log_path
        return labels

    # -- volumes -----------------------------------------------------------------------
    async def ensure_volumes(self) -> bool:
        try:
            self.volume_paths = await self._volumes()
        except UnsupportedVolume as e:
            # Never an empty directory in its place: the pod would run and fail in ways hard to trace.
            self.message = None
            for c in ((self.pod or {}).get("spec") or {}).get("containers") or []:
                if self.latest(c["name"], APP)[0] is None:
                    self.waiting[c["name"]] = ("CreateContainerConfigError", str(e))
            self.event("Warning", "Failed", f"Error: {e}")
            self.wake_in(30.0)
            return False
        except MountError as e:
            self.message = None
            for c in ((self.pod or {}).get("spec") or {}).get("containers") or []:
                if self.latest(c["name"], APP)[0] is None:
                    self.waiting[c["name"]] = ("ContainerCreating", "")
            self.event("Warning", "FailedMount", str(e))
            self.wake_in(2.0)
            return False
        return True

    async def _volumes(self) -> dict[str, Path]:
        assert self.pod is not None
        return await setup_volumes(VolumeContext(kubelet=self.k, pod=self.pod, pod_dir=self.pod_dir,
                                                 wake_in=self.wake_in))

    async def check_local_storage(self) -> bool:
        """The eviction manager's emptyDir check: a volume over its sizeLimit fails the pod. True when evicted."""
        pod = self.pod
        assert pod is not None
        if self.evicted is None:
            if time.monotonic() < self._usage_at:
                return False
            interval = self.k.config.eviction_monitoring_interval
            self._usage_at = time.monotonic() + interval
            usage = await asyncio.to_thread(emptydir_usage, pod, self.pod_dir)
            if not usage:
                return False
            self.wake_in(interval)
            msg = emptydir_over_limit(pod, usage)
            if msg is None:
                return False
            log.info("pod evicted pod=%s/%s uid=%s reason=Evicted usage=%s msg=%r", self.namespace, self.name,
                     self.uid, usage, msg)
            self.evicted = msg
            self.event("Warning", "Evicted", msg)
        await self._stop_probes()
        for r in self.records:
            if r.running and r.kind != SANDBOX:
                await self.kill_container(r, 0.0)
        await self.snapshot()
        await self.write_status()
        self.mark_dirty()   # tear the sandbox down as for any finished pod
        return True

    def _mounts(self, c: dict[str, Any], env: dict[str, str] | None = None) -> list[tuple[str, str, bool]]:
        mounts = container_mounts(self.pod or {}, c, self.volume_paths, env)
        taken = {m[1] for m in mounts}
        for dest, host in self.etc_files.items():
            if dest not in taken and not (dest == "/etc/hosts" and self._host_network()):
                mounts.append((str(host), dest, False))
        return mounts

    # -- containers ----------------------------------------------------------------------
    async def ensure_image(self, c: dict[str, Any]) -> bool:
        k, name, image = self.k, c["name"], c.get("image", "")
        policy = c.get("imagePullPolicy") or "IfNotPresent"
        present = await k.runtime.image_exists(image)
        if policy == "Never":
            if not present:
                msg = f'Container image "{image}" is not present with pull policy of Never'
                self.waiting[name] = ("ErrImageNeverPull", msg)
                self.event("Warning", "ErrImageNeverPull", msg)
                self.wake_in(10.0)
            return present
        if policy == "IfNotPresent" and present:
            if name not in self._pulled_events:
                self._pulled_events.add(name)
                self.event("Normal", "Pulled", f'Container image "{image}" already present on machine')
            return True
        key = f"image/{image}"
        last_fail = self._pull_failed_at.get(image)
        if last_fail is not None:
            remaining = k.pull_backoff.remaining(key, last_fail)
            if remaining > 0:
                self.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self.event("Normal", "BackOff", f'Back-off pulling image "{image}"')
                self.wake_in(remaining)
                return False
        self.event("Normal", "Pulling", f'Pulling image "{image}"')
        t0 = time.monotonic()
        try:
            await k.runtime.pull(image)
        except ImagePullError as e:
            k.pull_backoff.next(key)
            self._pull_failed_at[image] = time.time()
            msg = f'Failed to pull image "{image}": {e.reason}'
            self.waiting[name] = ("ErrImagePull", msg)
            self.event("Warning", "Failed", msg)
            self.event("Warning", "Failed", "Error: ErrImagePull")
            self.wake_in(k.pull_backoff.get(key))
            return False
        self._pull_failed_at.pop(image, None)
        k.pull_backoff.forget(key)
        self.event("Normal", "Pulled", f'Successfully pulled image "{image}" in {time.monotonic() - t0:.3f}s')
        return True

    async def start_container(self, c: dict[str, Any], kind: str, restart: int) -> bool:
        k, pod, name = self.k, self.pod, c["name"]
        assert pod is not None
        with self.clock.stage("image"):
            have_image = await self.ensure_image(c)
        if not have_image:
            return False
        try:
            env = resolve_env(c, pod, pod_ip=self.pod_ip or "", host_ip=k.config.node_ip,
                              node_name=k.config.node_name, get_configmap=k.get_configmap,
                              get_secret=k.get_secret, node_alloc=k.node_alloc,
                              base=service_env(k.list_services(), namespace=self.namespace,
                                               enable_service_links=pod["spec"].get("enableServiceLinks", True)
                                               is not False))
            env.setdefault("HOSTNAME", self.hostname)
            command = [expand(a, env) for a in c.get("command") or []] or None
            args = [expand(a, env) for a in c.get("args") or []] or None
            mounts = self._mounts(c, env)
            target = c.get("targetContainerName") if kind == EPHEMERAL else None
            pid_ns = await self._target_pid_ns(target) if target else None
        except ConfigError as e:
            self.waiting[name] = ("CreateContainerConfigError", str(e))
            self.event("Warning", "Failed", f"Error: {e}")
            self.wake_in(5.0)
            return False
        resources = c.get("resources") or {}
        lim, req = resources.get("limits") or {}, resources.get("requests") or {}
        cpu_req = cpu_millis(req["cpu"]) if "cpu" in req else (cpu_millis(lim["cpu"]) if "cpu" in lim else 0)
        log_path = self.log_dir() / name / f"{restart}.log"
        cid = container_id_for(self.namespace, self.name, name)
        sec = c.get("securityContext") or {}
        pod_sec = pod["spec"].get("securityContext") or {}
        run_as_user = sec.get("runAsUser", pod_sec.get("runAsUser"))
        run_as_group = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
        user = None
        if run_as_user is not None:
            user = str(run_as_user) + (f":{run_as_group}" if run_as_group is not None else "")
        groups = [int(g) for g in ([pod_sec["fsGroup"]] if pod_sec.get("fsGroup") is not None else [])
                  + list(pod_sec.get("supplementalGroups") or [])]
        pid = self.sandbox_pid
        spec = ContainerSpec(
            id=cid, image=c["image"], command=command, args=args, env=env, working_dir=c.get("workingDir"),
            user=user, additional_gids=groups, mounts=mounts, shm_path=self.shm_path,
            netns_path=self.netns_path, pid_ns_path=pid_ns,
            ipc_ns_path=f"/proc/{pid}/ns/ipc" if pid else None, uts_ns_path=f"/proc/{pid}/ns/uts" if pid else None,
            cgroups_path=f"{self.cgroup_path}/{cid}", labels=self._labels(name, kind, restart, str(log_path)),
            log_path=str(log_path), privileged=bool(sec.get("privileged")),
            stdin=bool(c.get("stdin")), stdin_once=bool(c.get("stdinOnce")), tty=bool(c.get("tty")),
            read_only_rootfs=bool(sec.get("readOnlyRootFilesystem")),
            memory_limit=bytes_value(lim["memory"]) if "memory" in lim else None,
            cpu_shares=max(2, cpu_req * 1024 // 1000) if cpu_req else 2,
            cpu_quota=max(1000, cpu_millis(lim["cpu"]) * 100) if "cpu" in lim else None)
        try:
            with self.clock.stage("container"):
                await k.runtime.run(spec)
        except RuntimeError_ as e:
            self.waiting[name] = ("RunContainerError", str(e))
            self.event("Warning", "Failed", f"Error: {e}")
            k.backoff.next(f"{self.uid}/{name}")
            self.wake_in(k.backoff.get(f"{self.uid}/{name}"))
            log.warning("container start failed pod=%s/%s container=%s err=%s", self.namespace, self.name, name, e)
            return False
        k.container_pod[cid] = self.uid
        self.waiting.pop(name, None)
        self.event("Normal", "Created", f"Created container {name}")
        self.event("Normal", "Started", f"Started container {name}")
        log.info("container started pod=%s/%s container=%s id=%s restart=%d kind=%s%s", self.namespace, self.name,
                 name, cid, restart, kind, f" target={target}" if target else "")
        # Keep the newest dead instance (logs --previous, lastState); remove older ones.
        for old in self.instances(name, kind)[:-1]:
            with contextlib.suppress(RuntimeError_):
                await k.runtime.remove(old.id)
        return True   # sync's closing listing shows the new container

    async def _target_pid_ns(self, target: str) -> str:
        """The PID namespace of a running regular or init container, for an ephemeral container to join."""
        rec = next((r for r in reversed(self.records)
                    if r.name == target and r.kind in (APP, INIT) and r.running), None)
        pid = await self.k.runtime.task_pid(rec.id) if rec is not None else None
        if not pid:
            raise ConfigError(f"unable to find target container {target}")   # Kubernetes' words
        return f"/proc/{pid}/ns/pid"

    async def kill_container(self, rec: ContainerRecord, grace: float, c: dict[str, Any] | None = None) -> None:
        """preStop hook, SIGTERM, SIGKILL after ``grace`` seconds; waits for the exit."""
        k = self.k
        deadline = time.monotonic() + max(0.0, grace)
        hook = ((c or {}).get("lifecycle") or {}).get("preStop") or {}
        if hook.get("exec"):
            argv = list(hook["exec"].get("command") or [])
            try:
                proc = await k.runtime.exec(rec.id, "prestop-" + secrets.token_hex(4), argv)
                try:
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        await proc.communicate()
                finally:
                    await kill_exec(proc)   # a hook past the grace period (or cancelled) leaves no ctr behind
                if proc.returncode:
                    self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: exit {proc.returncode}")
            except (TimeoutError, RuntimeError_, OSError) as e:
                self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {e}")
        for sig in ("SIGTERM", "SIGKILL"):
            if sig == "SIGKILL":
                log.info("container kill escalated container=%s signal=SIGKILL grace=%.1fs", rec.id, grace)
            try:
                await k.runtime.kill(rec.id, sig, all_processes=sig == "SIGKILL")
            except RuntimeError_:
                return   # no task: already gone
            wait_until = deadline if sig == "SIGTERM" else time.monotonic() + 10.0
            if await k.wait_exit(rec.id, wait_until - time.monotonic()):
                return
        log.warning("container did not exit after SIGKILL container=%s waited=10s", rec.id)

    # -- probes ----------------------------------------------------------------------------
    def _failed_probe(self, cid: str) -> str | None:
        for w in self.probes.get(cid, []):
            if w.kind in (LIVENESS, STARTUP) and w.state.verdict is False:
                return w.kind
        return None

    def _cancel_probes(self, cid: str | None = None) -> list[ProbeWorker]:
        """Tell the probes of ``cid`` (or of every container) to stop, without waiting; the workers."""
        workers = [w for key in ([cid] if cid else list(self.probes)) for w in self.probes.pop(key, [])]
        for w in workers:
            w.cancel()
        return workers

    async def _stop_probes(self, cid: str | None = None) -> None:
        """Stop the probes of ``cid`` (or of every container): all at once, each bounded by its ``stop``."""
        await asyncio.gather(*(w.stop() for w in self._cancel_probes(cid)))

    async def _sync_probes(self) -> None:
        spec = (self.pod or {}).get("spec") or {}
        running: dict[str, tuple[ContainerRecord, dict[str, Any]]] = {}
        for c in spec.get("containers") or []:
            latest, _ = self.latest(c["name"], APP)
            if latest is not None and latest.running:
                running[latest.id] = (latest, c)
        for cid in [c for c in self.probes if c not in running]:
            await self._stop_probes(cid)
        for cid, (rec, c) in running.items():
            if cid in self.probes:
                continue
            workers: list[ProbeWorker] = []
            ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or [] if p.get("name")}
            started = time.monotonic() - max(0.0, time.time() - _parse_time(rec.created_at))
            startup: list[ProbeWorker] = []

            def gate(startup: list[ProbeWorker] = startup) -> bool:
                return all(w.ok for w in startup)

            for kind, key in ((STARTUP, "startupProbe"), (LIVENESS, "livenessProbe"), (READINESS, "readinessProbe")):
                if not c.get(key):
                    continue
                w = ProbeWorker(kind, c[key], runtime=self.k.runtime, container_id=cid, pod_ip=self.pod_ip or "",
                                ports=ports, started_monotonic=started,
                                gate=(lambda: True) if kind == STARTUP else gate, on_change=self.mark_dirty,
                                on_failure=lambda kind, out, n=c["name"]: self.event(
                                    "Warning", "Unhealthy", f"{kind} probe failed: {out}"))
                if kind == STARTUP:
                    startup.append(w)
                workers.append(w)
                w.start()
            self.probes[cid] = workers

    def _probe_view(self, cid: str) -> tuple[bool, bool]:
        """(ready, started) of a running container instance."""
        ws = {w.kind: w for w in self.probes.get(cid, [])}
        started = ws[STARTUP].ok if STARTUP in ws else True
        ready = started and (ws[READINESS].ok if READINESS in ws else True)
        return ready, started

    # -- status ------------------------------------------------------------------------
    def _views(self, containers: list[dict[str, Any]], kind: str) -> dict[str, ContainerView]:
        views = {}
        for c in containers:
            latest, prev = self.latest(c["name"], kind)
            v = ContainerView(latest=latest, previous=prev, waiting=self.waiting.get(c["name"]),
                              image_id=self.k.image_id(c.get("image", "")))
            if latest is not None and latest.running:
                if kind == APP:
                    v.ready, v.started = self._probe_view(latest.id)
                elif kind == INIT:
                    v.started = True
            views[c["name"]] = v
        return views

    async def write_status(self) -> dict[str, Any]:
        pod = self.pod
        assert pod is not None
        spec = pod.get("spec") or {}
        base = self.k.status.last(self.uid) or pod.get("status") or {}
        await self.k.ensure_image_ids([c.get("image", "") for c in (spec.get("containers") or [])
                                       + (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])])
        inp = PodStatusInput(views=self._views(spec.get("containers") or [], APP),
                             init_views=self._views(spec.get("initContainers") or [], INIT),
                             ephemeral_views=self._views(spec.get("ephemeralContainers") or [], EPHEMERAL),
                             pod_ip=self.pod_ip, host_ip=self.k.config.node_ip, start_time=self.start_time,
                             message=self.message)
        status = build_pod_status({**pod, "status": base}, inp)
        if self.evicted is not None:
            # As upstream's eviction manager writes it: Failed/Evicted and a DisruptionTarget condition.
            status["phase"], status["reason"], status["message"] = "Failed", "Evicted", self.evicted
            old = next((c for c in base.get("conditions") or [] if c.get("type") == "DisruptionTarget"), None)
            status["conditions"] = [c for c in status["conditions"] if c.get("type") != "DisruptionTarget"] + [
                old or {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(), "reason": "TerminationByKubelet",
                        "message": self.evicted}]
        if not await self.k.status.write(pod, status):
            self.wake_in(self.k.status.due_in(self.uid))
        return status

    # -- the end of a pod -------------------------------------------------------------
    async def _stop_finished(self) -> None:
        """A Succeeded/Failed pod: stop what still runs, give back its sandbox and address."""
        spec = (self.pod or {}).get("spec") or {}
        by_name = {c["name"]: c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
        await self._stop_probes()
        for r in self.records:
            if r.running and r.kind != SANDBOX:
                await self.kill_container(r, float(spec.get("terminationGracePeriodSeconds", 30)),
                                          by_name.get(r.name))
        for r in self.records:
            if r.kind == SANDBOX:
                await self.k.runtime.remove(r.id)
        if self.sandbox_id is not None or any(r.kind == SANDBOX for r in self.records):
            log.info("pod finished, sandbox removed pod=%s/%s uid=%s", self.namespace, self.name, self.uid)
        self.sandbox_id = None
        await asyncio.to_thread(self.k.network.teardown_pod, self.uid)
        await asyncio.to_thread(self.k.ipam.release, self.uid)
        await self.snapshot()

    async def terminate(self) -> bool:
        pod = self.pod
        # Termination starts now, whatever the probes are doing: they are told to stop here and
        # their ends are awaited (bounded) beside the kill, so a probe stuck in its runtime call
        # can neither delay the grace period nor outlive the pod.
        probes = self._cancel_probes()
        if pod is not None and self.kill_deadline is None:
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            self.kill_deadline = time.monotonic() + grace
            log.info("pod terminating pod=%s/%s uid=%s grace=%ss", self.namespace, self.name, self.uid, grace)
        await asyncio.gather(asyncio.gather(*(w.stop() for w in probes)), self._kill_all(pod))
        await self.k.cleanup_pod(self.uid, log_dir=self.log_dir() if self.name else None)
        self.records = []
        if pod is not None:
            meta = pod["metadata"]
            try:
                await self.k.client.delete("pods", meta["name"], namespace=meta["namespace"], grace_period_seconds=0,
                                           preconditions={"uid": self.uid})
                log.info("pod deleted pod=%s/%s uid=%s", meta["namespace"], meta["name"], self.uid)
            except (NotFoundError, ConflictError):
                pass
        self.k.status.forget(self.uid)
        self.k.backoff.forget_prefix(f"{self.uid}/")
        return True

    async def _kill_all(self, pod: dict[str, Any] | None) -> None:
        """Kill every running container of a terminating pod by its deadline (``terminate``)."""
        await self.snapshot()
        if pod is None or self.kill_deadline is None:
            return
        spec = pod.get("spec") or {}
        by_name = {c["name"]: c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
        running = [r for r in self.records if r.running and r.kind != SANDBOX]
        for r in running:
            self.event("Normal", "Killing", f"Stopping container {r.name}")
        await asyncio.gather(*(self.kill_container(r, self.kill_deadline - time.monotonic(), by_name.get(r.name))
                               for r in running))


def _fmt_duration(seconds: int) -> str:
    """Go's time.Duration.String for whole seconds: 10s, 1m20s, 5m0s."""
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60}s"
