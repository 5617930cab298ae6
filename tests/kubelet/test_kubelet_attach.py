"""kubectl attach and kubectl run -i against a real kubelet (stdin, stdinOnce, tty, restart).

Shares the kubelet fixture of ``test_kubelet_e2e`` (one API server, one
kubelet, one containerd for the whole module). kubectl runs for real; an
interactive kubectl is driven through pipes or, for ``-t``, a pseudo-terminal,
and is ended (detached) by the test once it has seen what it waited for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from typing import Any

import pytest

from kubepy.client import Client, NotFoundError
from tests.e2e.conftest import KUBECTL
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import pod, wait_for

pytestmark = pytest.mark.slow


def running(p: dict[str, Any]) -> bool:
    return any("running" in (s.get("state") or {}) for s in p["status"].get("containerStatuses") or [])


class Interactive:
    """A kubectl process whose output is read as it comes; stopped (detached) on ``close``."""

    def __init__(self, node: KubeletNode, *args: str, tty: bool = False, size: tuple[int, int] = (0, 0)) -> None:
        cmd = [KUBECTL, "--kubeconfig", str(node.apiserver.kubeconfig), "-n", node.test_ns, *args]
        self.out = b""
        if tty:
            self.master, slave = pty.openpty()
            if size[0]:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
            self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
            self.read_fd, self.write_fd = self.master, self.master
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            assert self.proc.stdout is not None and self.proc.stdin is not None
            self.read_fd, self.write_fd = self.proc.stdout.fileno(), self.proc.stdin.fileno()

    def send(self, data: bytes) -> None:
        os.write(self.write_fd, data)

    def end_input(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_for(self, text: bytes, timeout: float = 60.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen in {timeout}s; kubectl said: {self.out!r}")
            ready, _, _ = select.select([self.read_fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.read_fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"kubectl ended before {text!r}: {self.out!r} "
                                         f"(exit {self.proc.poll()})")
                self.out += chunk
        return self.out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        if getattr(self, "master", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)


@contextlib.contextmanager
def interactive(node: KubeletNode, *args: str, **kw: Any):
    it = Interactive(node, *args, **kw)
    try:
        yield it
    finally:
        it.close()


async def test_kubectl_run_i_rm_is_interactive_and_removes_the_pod(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    name = "att-run-" + os.urandom(3).hex()
    overrides = '{"apiVersion": "v1", "spec": {"nodeName": "%s", "terminationGracePeriodSeconds": 1}}' % node.name
    cp = node.apiserver.kubectl("-n", node.test_ns, "run", "-i", "--rm", "--restart=Never", "--image=busybox:1.36",
                                f"--overrides={overrides}", "--pod-running-timeout=2m", name, "--", "sh",
                                input="echo hello-$((6*7))-$HOSTNAME; exit\n", check=False, timeout=240)
    assert cp.returncode == 0, (cp.stdout, cp.stderr, node.log_tail(60))
    assert f"hello-42-{name}" in cp.stdout, (cp.stdout, cp.stderr)
    assert f'pod "{name}" deleted' in cp.stdout + cp.stderr, (cp.stdout, cp.stderr)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            await client.get("pods", name, namespace=node.test_ns)
        except NotFoundError:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"pod {name} still there\n{node.log_tail()}")


async def test_attach_to_stdin_pod_detach_reattach_and_after_kubelet_restart(kubelet_node: KubeletNode,
                                                                             client: Client):
    node = kubelet_node
    ns = node.test_ns
    await client.create("pods", pod(node, "att-sh", [{"name": "main", "command": ["sh"], "stdin": True}]),
                        namespace=ns)
    await wait_for(client, node, "att-sh", running, timeout=90, what="running")
    with interactive(node, "attach", "-i", "att-sh", "-c", "main") as k:
        k.send(b"echo first-$((6*7))\n")
        k.wait_for(b"first-42")
    # stdin stays open without stdinOnce: a second attacher still reaches the same shell.
    with interactive(node, "attach", "-i", "att-sh", "-c", "main") as k:
        k.send(b"echo second-$((6*8))\n")
        k.wait_for(b"second-48")
    # Everything the shell wrote is in its log too.
    logs = node.apiserver.kubectl("-n", ns, "logs", "att-sh").stdout
    assert "first-42" in logs and "second-48" in logs, logs

    node.stop_kubelet(signal.SIGKILL)
    node.start_kubelet()
    deadline = time.monotonic() + 120
    while True:
        with interactive(node, "attach", "-i", "att-sh", "-c", "main") as k:
            k.send(b"echo after-restart-$((7*7))\n")
            try:
                k.wait_for(b"after-restart-49", timeout=15)
                break
            except AssertionError:
                if time.monotonic() > deadline:    # the new kubelet may still be syncing its pods
                    raise AssertionError(f"no attach after restart: {k.out!r}\n{node.log_tail()}") from None
    p = await client.get("pods", "att-sh", namespace=ns)
    assert p["status"]["containerStatuses"][0]["restartCount"] == 0, p["status"]
    await client.delete("pods", "att-sh", namespace=ns, grace_period_seconds=0)


async def test_stdin_once_closes_stdin_after_the_first_attach(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    script = "while read l; do echo got-$l; done; echo stdin-closed; exec sleep 3600"
    await client.create("pods", pod(node, "att-once", [{"name": "main", "command": ["sh", "-c", script],
                                                        "stdin": True, "stdinOnce": True}]),
                        namespace=node.test_ns)
    await wait_for(client, node, "att-once", running, timeout=90, what="running")
    with interactive(node, "attach", "-i", "att-once") as k:
        k.send(b"one\n")
        k.wait_for(b"got-one")
        k.end_input()                 # kubectl closes stdin; with stdinOnce so does the container's
        k.wait_for(b"stdin-closed")
    logs = node.apiserver.kubectl("-n", node.test_ns, "logs", "att-once").stdout
    assert logs.splitlines() == ["got-one", "stdin-closed"], logs
    await client.delete("pods", "att-once", namespace=node.test_ns, grace_period_seconds=0)


async def test_tty_attach_through_a_pseudo_terminal(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    await client.create("pods", pod(node, "att-tty", [{"name": "main", "command": ["sh"], "stdin": True,
                                                       "tty": True}]), namespace=node.test_ns)
    await wait_for(client, node, "att-tty", running, timeout=90, what="running")
    with interactive(node, "attach", "-it", "att-tty", "-c", "main", tty=True, size=(33, 111)) as k:
        k.wait_for(b"If you don't see a command prompt")
        k.send(b"tty; echo tty-$((6*7)); stty size\r")
        out = k.wait_for(b"tty-42")
        assert b"/dev/pts/0" in out, out
        # kubectl sends the size plus one, then the size (to force a redraw), from its own goroutine:
        # on a loaded host our first `stty size` may run between the two. The terminal must end at
        # the real size; ask again until it has.
        for _ in range(10):
            try:
                k.wait_for(b"33 111", timeout=3)
                break
            except AssertionError:
                k.send(b"stty size\r")
        else:
            raise AssertionError(f"the terminal never took kubectl's size 33x111: {k.out!r}")
    logs = node.apiserver.kubectl("-n", node.test_ns, "logs", "att-tty").stdout
    assert "tty-42" in logs, logs
    await client.delete("pods", "att-tty", namespace=node.test_ns, grace_period_seconds=0)


async def test_attach_to_a_container_without_stdin(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done"
    await client.create("pods", pod(node, "att-plain", [{"name": "main", "command": ["sh", "-c", script]}]),
                        namespace=node.test_ns)
    await wait_for(client, node, "att-plain", running, timeout=90, what="running")
    with interactive(node, "attach", "-it", "att-plain") as k:
        out = k.wait_for(b"tick-")
        assert b"Unable to use a TTY - container main did not allocate one" in out, out
    await client.delete("pods", "att-plain", namespace=node.test_ns, grace_period_seconds=0)


async def test_kubectl_run_it_rm_on_a_terminal(kubelet_node: KubeletNode, client: Client):
    """`kubectl run -it --rm` from a real terminal: a tty shell in the pod, then the pod is gone."""
    node = kubelet_node
    name = "att-runt-" + os.urandom(3).hex()
    overrides = '{"apiVersion": "v1", "spec": {"nodeName": "%s", "terminationGracePeriodSeconds": 1}}' % node.name
    with interactive(node, "run", "-it", "--rm", "--restart=Never", "--image=busybox:1.36",
                     f"--overrides={overrides}", "--pod-running-timeout=2m", name, "--", "sh",
                     tty=True, size=(24, 80)) as k:
        k.wait_for(b"If you don't see a command prompt")
        k.send(b"tty; echo runt-$((6*7)); exit\r")
        out = k.wait_for(f'pod "{name}" deleted'.encode(), timeout=120)
        assert b"/dev/pts/0" in out and b"runt-42" in out, out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            await client.get("pods", name, namespace=node.test_ns)
        except NotFoundError:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"pod {name} still there\n{node.log_tail()}")
