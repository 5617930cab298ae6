"""The lab supervisor's decisions (backoff, adoption, never twice) and `up`'s refusals, as tables;
plus the adapters that must hold on a real host: the gate and /proc start times."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubepy.lab.cluster import ClusterState, expected_daemons, names_dir, restarts_text, up_conflict
from kubepy.lab.supervisor import (BACKOFF_MAX, HEALTHY_AFTER, Action, Daemon, Desired, Record, after_start,
                                   declare, is_running, load_desired, load_state, open_gate, process_start_time,
                                   reconcile, restart_delay, save_state, set_stopped, spawn_gated, State)


@pytest.mark.parametrize("failures, delay", [
    (0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (7, BACKOFF_MAX), (50, BACKOFF_MAX),
])
def test_restart_delay_starts_small_and_is_capped(failures, delay):
    assert restart_delay(failures) == pytest.approx(delay)


RUNNING = Record(pid=42, start_time=1000, started=100.0)


@pytest.mark.parametrize("rec, observed, me, expected", [
    (RUNNING, 1000, 0, True),             # same pid, same start time
    (RUNNING, 1001, 0, False),            # pid reused by another process: not adopted
    (RUNNING, None, 0, False),            # gone, or a zombie
    (RUNNING, 1000, 42, False),           # the standby record is the twin asking: it is active now
    (Record(), None, 0, False),           # never started
    (Record(pid=0, start_time=0), 0, 0, False),
])
def test_is_running_checks_pid_and_start_time(rec, observed, me, expected):
    assert is_running(rec, observed, me=me) is expected


@pytest.mark.parametrize("name, rec, running, now, action, check", [
    ("unknown daemon: start", None, False, 0.0, Action.START, lambda r: r == Record()),
    ("running: keep", RUNNING, True, 105.0, Action.KEEP, lambda r: r == RUNNING),
    ("running long enough: backoff resets", Record(42, 1000, 100.0, failures=4), True, 100 + HEALTHY_AFTER,
     Action.KEEP, lambda r: r.failures == 0),
    ("not long enough: backoff kept", Record(42, 1000, 100.0, failures=4), True, 101.0,
     Action.KEEP, lambda r: r.failures == 4),
    ("quick death: first backoff", RUNNING, False, 101.0, Action.DIED,
     lambda r: r.pid == 0 and r.failures == 1 and r.restart_at == pytest.approx(101.1)),
    ("quick deaths in a row: doubling", Record(42, 1000, 100.0, failures=3), False, 101.0, Action.DIED,
     lambda r: r.failures == 4 and r.restart_at == pytest.approx(101.8)),
    ("death after a long life: the smallest delay", Record(42, 1000, 100.0, failures=6), False, 500.0,
     Action.DIED, lambda r: r.failures == 1 and r.restart_at == pytest.approx(500.1)),
    ("dead, backoff pending: wait", Record(0, 0, 100.0, failures=3, restart_at=102.0), False, 101.0,
     Action.WAIT, lambda r: r.restart_at == 102.0),
    ("dead, backoff over: start", Record(0, 0, 100.0, failures=3, restart_at=102.0), False, 102.0,
     Action.START, lambda r: r.failures == 3),
])
def test_reconcile(name, rec, running, now, action, check):
    new, got = reconcile(rec, running, now)
    assert got is action, name
    assert check(new), (name, new)


def test_a_death_is_one_restart_never_two():
    """Whatever the ticks, one death gives exactly one start: after it the record runs again."""
    rec = RUNNING
    starts = 0
    now = 101.0
    rec, action = reconcile(rec, False, now)
    assert action is Action.DIED
    for tick in range(40):
        now += 0.05
        running = rec.pid != 0
        rec, action = reconcile(rec, running, now)
        if action is Action.START:
            starts += 1
            rec = after_start(rec, 43 + tick, 2000 + tick, now, 1e9)
    assert starts == 1
    assert rec.restarts == 1 and rec.last_restart == 1e9


def test_first_start_is_not_a_restart():
    first = after_start(Record(), 10, 500, 1.0, 1e9)
    assert (first.pid, first.start_time, first.restarts, first.last_restart) == (10, 500, 0, 0.0)
    again = after_start(replace_dead(first), 11, 600, 2.0, 2e9)
    assert (again.restarts, again.last_restart, again.restart_at) == (1, 2e9, 0.0)


def replace_dead(rec: Record) -> Record:
    new, action = reconcile(rec, False, rec.started + 1)
    assert action is Action.DIED
    return new


CLUSTER = ClusterState("kptlab-x", 7001, nodes=2, subnet="172.30.9.0/24", store="sqlite")


@pytest.mark.parametrize("flags, problem", [
    ({}, None),
    ({"nodes": 2, "store": "sqlite", "port": 7001, "subnet": "172.30.9.0/24"}, None),
    ({"nodes": 3}, None),  # more nodes: up adds them
    ({"nodes": 1}, "2 nodes, not --nodes 1"),
    ({"store": "etcd"}, "store sqlite, not --store etcd"),
    ({"port": 7002}, "port 7001, not --port 7002"),
    ({"subnet": "172.30.10.0/24"}, "node subnet 172.30.9.0/24, not --node-subnet 172.30.10.0/24"),
    ({"proxy_mode": "iptables"}, None),  # what an older state file (no mode) runs
    ({"proxy_mode": "nftables"}, "proxy mode iptables, not --proxy-mode nftables"),
])
def test_up_on_an_existing_cluster_refuses_other_flags_in_one_line(flags, problem):
    args = {"nodes": None, "store": None, "port": None, "subnet": None, **flags}
    got = up_conflict(CLUSTER, **args)
    if problem is None:
        assert got is None
    else:
        assert problem in got and "\n" not in got
        assert "kubepy down --name kptlab-x" in got and "deletes its store" in got


def test_expected_daemons():
    assert expected_daemons(ClusterState("c", 1, nodes=0)) == ["controlplane"]
    assert expected_daemons(ClusterState("c", 1, nodes=1, store="etcd")) == [
        "etcd", "controlplane", "c-node1/containerd", "c-node1/kubelet", "c-node1/proxy", "c-node1/netpol",
        "c-node1/dns", "c-node1/ingress"]


def test_restarts_text():
    assert restarts_text(None, 0) == "restarts 0"
    assert restarts_text(Record(restarts=0), 0) == "restarts 0"
    text = restarts_text(Record(restarts=3, last_restart=1000.0), 1035.0)
    assert text.startswith("restarts 3, last 35s ago (") and text.endswith(")")


@pytest.mark.parametrize("argv, expected", [
    (["containerd-shim-runc-v2", "-namespace", "kubepy", "-address", "/r/c/nodes/n1/containerd/containerd.sock"], True),
    (["etcd", "--data-dir=/r/c/etcd"], True),
    (["python", "-m", "kubepy", "lab", "supervise", "--cluster-dir", "/r/c"], True),
    (["python", "-m", "kubepy", "up", "--name", "c", "--state-dir", "/r"], False),
    (["etcd", "--data-dir=/r/c2/etcd"], False),   # another cluster whose name starts the same
])
def test_names_dir(argv, expected):
    assert names_dir(argv, "/r/c") is expected


def test_desired_declare_keeps_the_first_declaration(tmp_path: Path):
    first = Daemon("etcd", ["etcd", "--listen-client-urls=http://127.0.0.1:2379"], "etcd.log")
    assert declare(tmp_path, first) == first
    other = Daemon("etcd", ["etcd", "--listen-client-urls=http://127.0.0.1:2400"], "etcd.log")
    assert declare(tmp_path, other) == first, "a repair restarts etcd on its old ports"
    set_stopped(tmp_path, True)
    assert load_desired(tmp_path) == Desired([first], stopped=True)


def test_state_round_trip(tmp_path: Path):
    state = State(active=Record(pid=5, start_time=9), takeovers=2, daemons={"a": Record(7, 8, 1.0, restarts=3)})
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert load_state(tmp_path / "missing") == State()


# -- adapters on the real host -------------------------------------------------------
def test_process_start_time_sees_zombies_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:   # exited but not reaped: a zombie
        if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert process_start_time(proc.pid) is None
    proc.wait()
    assert process_start_time(os.getpid()) == int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_gate_runs_the_daemon_in_the_recorded_pid(tmp_path: Path):
    out = tmp_path / "out"
    pid, gate = spawn_gated([sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(str(os.getpid()))"],
                            tmp_path / "log")
    started = process_start_time(pid)
    time.sleep(0.3)
    assert not out.exists(), "nothing runs before the gate opens"
    open_gate(gate)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text() == str(pid), "the daemon has the pid recorded for the gate"
    assert started is not None


def test_gate_closed_unopened_starts_nothing(tmp_path: Path):
    """The supervisor died between spawn and saving its record: the daemon never starts."""
    out = tmp_path / "out"
    pid, gate = spawn_gated([sys.executable, "-c", f"open({str(out)!r}, 'w')"], tmp_path / "log")
    os.close(gate)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 111
    assert not out.exists()
