"""``kubepy controlplane`` starts each component on its own kubeconfig: the scheduler on
scheduler.kubeconfig, the controller manager on controller-manager.kubeconfig with
--use-service-account-credentials; admin.kubeconfig (system:masters) is nobody's."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepy import cli, controlplane


def test_controlplane_gives_each_component_its_own_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, list[str]] = {}

    def fake_run(api: list[str], sched: list[str], cm: list[str], *, data_dir: Path, port: int) -> int:
        seen.update(api=api, sched=sched, cm=cm)
        return 0

    monkeypatch.setattr(controlplane, "run_controlplane", fake_run)
    args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert seen["sched"][seen["sched"].index("--kubeconfig") + 1] == str(tmp_path / "scheduler.kubeconfig")
    assert seen["cm"][seen["cm"].index("--kubeconfig") + 1] == str(tmp_path / "controller-manager.kubeconfig")
    assert "--use-service-account-credentials" in seen["cm"]
    assert not any("admin.kubeconfig" in str(a) for a in seen["sched"] + seen["cm"])
    cm_args = cli.build_parser().parse_args([str(a) for a in seen["cm"][seen["cm"].index("controller-manager"):]])
    assert cli.controller_config(cm_args).use_service_account_credentials
