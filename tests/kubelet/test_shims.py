"""Which containerd shims are orphans of this kubelet (pure), and kill_shim on a real process tree."""

from __future__ import annotations

import shutil
import subprocess
import time

import psutil
import pytest

from kubepy.kubelet.shims import Shim, kill_shim, list_shims, orphan_shims, parse_shim_argv

SOCK = "/var/lib/kp/node1/containerd.sock"


@pytest.mark.parametrize("argv, want", [
    (["/usr/bin/containerd-shim-runc-v2", "-namespace", "kubepy", "-id", "c1", "-address", SOCK],
     (SOCK, "kubepy", "c1")),
    (["containerd-shim-runc-v2", "-namespace=k8s.io", "-id=x", "-address=/run/containerd/containerd.sock",
      "-debug"], ("/run/containerd/containerd.sock", "k8s.io", "x")),
    (["containerd-shim-runc-v2", "-debug", "-namespace", "kubepy", "-id", "c1", "-address", SOCK],
     (SOCK, "kubepy", "c1")),
    (["/usr/bin/containerd-shim-runc-v2", "-namespace", "kubepy", "-id", "c1"], None),   # no address
    (["/usr/bin/containerd", "--config", "x", "-namespace", "kubepy", "-id", "c1", "-address", SOCK], None),
    (["python3", "containerd-shim-runc-v2", "-namespace", "kubepy", "-id", "c1", "-address", SOCK], None),
    ([], None),
    # containerd's transient invocations: launching a shim, cleaning up after a dead one
    (["/usr/bin/containerd-shim-runc-v2", "-namespace", "kubepy", "-address", SOCK, "-publish-binary",
      "/usr/bin/containerd", "-id", "c1", "start"], None),
    (["/usr/bin/containerd-shim-runc-v2", "-namespace", "kubepy", "-address", SOCK, "-publish-binary",
      "/usr/bin/containerd", "-id", "c1", "-bundle", "/x/c1", "delete"], None),
])
def test_parse_shim_argv(argv, want):
    assert parse_shim_argv(argv) == want


def shim(pid, id_, *, address=SOCK, namespace="kubepy", started=0.0):
    return Shim(pid=pid, address=address, namespace=namespace, id=id_, started=started)


@pytest.mark.parametrize("shims, tasks, want_orphans, want_young", [
    # a shim whose task containerd knows is no orphan
    ([shim(1, "a")], {"a"}, [], []),
    # an old shim of our containerd and namespace without a task: orphan
    ([shim(1, "a")], set(), [1], []),
    # the same, but started 3 s ago: its task may be being created right now
    ([shim(1, "a", started=97.0)], set(), [], [1]),
    # another node's containerd, the host's containerd, another namespace on ours: never ours
    ([shim(1, "a", address="/var/lib/kp/node2/containerd.sock"),
      shim(2, "a", address="/run/containerd/containerd.sock"),
      shim(3, "a", namespace="k8s.io")], set(), [], []),
    # the socket path spelled differently is still ours
    ([shim(1, "a", address="/var/lib/kp/node1/../node1/containerd.sock")], set(), [1], []),
    # a mix
    ([shim(1, "a"), shim(2, "b"), shim(3, "c", started=99.0), shim(4, "d", namespace="other")], {"a"}, [2], [3]),
])
def test_orphan_shims(shims, tasks, want_orphans, want_young):
    orphans, young = orphan_shims(shims, address=SOCK, namespace="kubepy", tasks=tasks, now=100.0, min_age=10.0)
    assert [s.pid for s in orphans] == want_orphans
    assert [s.pid for s in young] == want_young


@pytest.fixture
def fake_shim(tmp_path):
    """A process named containerd-shim-runc-v2 (a copy of sh) with a child, like a real shim and its container."""
    binary = tmp_path / "containerd-shim-runc-v2"
    shutil.copy("/bin/sh", binary)
    sock = str(tmp_path / "containerd.sock")
    # sh -c 'script' NAME args...: argv[0] is the binary's path, the flags follow as $0...
    # Like a real shim it outlives its container: kill_shim kills the child first, and a bare `wait`
    # would let sh exit 0 before its own SIGKILL lands (the test saw 0, not -9, about 1 run in 4).
    proc = subprocess.Popen([str(binary), "-c", "sleep 300 & wait; exec sleep 300", "-namespace", "kubepy",
                             "-id", "kptnode-t1",
                             "-address", sock], start_new_session=True)
    try:
        yield proc, sock
    finally:
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)] \
                if psutil.pid_exists(proc.pid) else []:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(5)


def test_kill_shim_kills_the_shim_and_its_container_processes(fake_shim):
    proc, sock = fake_shim
    deadline = time.monotonic() + 10
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = psutil.Process(proc.pid).children()[0]
    ours = [s for s in list_shims() if s.pid == proc.pid]
    # sh's own argv: [binary, -c, script, -namespace, ...]; parse_shim_argv skips "-c script" as a flag pair
    assert [(s.address, s.namespace, s.id) for s in ours] == [(sock, "kubepy", "kptnode-t1")]
    # a stale record (another process's create time) is refused: pids get recycled
    assert kill_shim(Shim(pid=proc.pid, address=sock, namespace="kubepy", id="kptnode-t1",
                          started=ours[0].started - 100)) == 0
    assert proc.poll() is None
    assert kill_shim(ours[0]) == 2
    assert proc.wait(5) == -9
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
