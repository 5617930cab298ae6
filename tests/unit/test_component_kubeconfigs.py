"""``kubepy controlplane`` starts each component on its own kubeconfig: the scheduler on
scheduler.kubeconfig, the controller manager on controller-manager.kubeconfig with
--use-service-account-credentials; admin.kubeconfig (system:masters) is nobody's."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepy import cli, controlplane


def test_controlplane_gives_each_component_its_own_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, list[str]] = {}

    def fake_run(api: list[str], sched: list[str], cm: list[str], *, data_dir: Path, port: int, **rest) -> int:
        seen.update(api=api, sched=sched, cm=cm, **rest)
        return 0

    monkeypatch.setattr(controlplane, "run_controlplane", fake_run)
    args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert seen["metrics_argv"] is None  # no advertised address: no metrics server (Endpoints need one)
    assert seen["sched"][seen["sched"].index("--kubeconfig") + 1] == str(tmp_path / "scheduler.kubeconfig")
    assert seen["cm"][seen["cm"].index("--kubeconfig") + 1] == str(tmp_path / "controller-manager.kubeconfig")
    assert "--use-service-account-credentials" in seen["cm"]
    assert not any("admin.kubeconfig" in str(a) for a in seen["sched"] + seen["cm"])
    cm_args = cli.build_parser().parse_args([str(a) for a in seen["cm"][seen["cm"].index("controller-manager"):]])
    assert cli.controller_config(cm_args).use_service_account_credentials


def test_controlplane_runs_the_metrics_server_on_its_own_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: dict = {}

    def fake_run(api, sched, cm, *, data_dir: Path, port: int, **rest) -> int:
        seen.update(rest)
        return 0

    monkeypatch.setattr(controlplane, "run_controlplane", fake_run)
    args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path), "--advertise-address",
                                          "10.0.0.1", "--metric-resolution", "5s"])
    assert args.func(args) == 0
    ms = seen["metrics_argv"]
    assert (seen["advertise_address"], seen["metrics_port"]) == ("10.0.0.1", 4443)
    ms_args = cli.build_parser().parse_args(ms[ms.index("metrics-server"):])
    assert ms_args.kubeconfig == tmp_path / "metrics-server.kubeconfig"
    assert (ms_args.bind_address, ms_args.secure_port, ms_args.metric_resolution) == ("10.0.0.1", 4443, 5.0)
    args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path), "--advertise-address",
                                          "10.0.0.1", "--metrics-server-port", "0"])
    assert args.func(args) == 0 and seen["metrics_argv"] is None


@pytest.mark.parametrize("argv, module, runner", [
    (["proxy", "--kubeconfig", "k", "--iptables-sync-period", "2m"], "kubepy.proxy.proxier", "run_proxy"),
    (["proxy", "--kubeconfig", "k", "--sync-period", "2m"], "kubepy.proxy.proxier", "run_proxy"),
    (["netpol", "--kubeconfig", "k", "--sync-period", "2m"], "kubepy.netpol.agent", "run_agent"),
])
def test_node_daemons_take_their_full_sync_period(argv: list[str], module: str, runner: str,
                                                   monkeypatch: pytest.MonkeyPatch):
    import importlib

    seen: dict = {}

    async def fake_run(config) -> None:
        seen["sync_period"] = config.sync_period

    monkeypatch.setattr(importlib.import_module(module), runner, fake_run)
    monkeypatch.setattr(cli, "_with_metrics", lambda coro, bind, registry: coro)
    args = cli.build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert seen["sync_period"] == 120.0
    bad = argv[:-1] + ["soon"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(bad)
