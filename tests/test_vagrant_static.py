"""Static checks of the VM cluster's files: Vagrantfile, vagrant/ scripts, systemd/ units.

No VM is started. What is checked:

- every vagrant/ script parses (``bash -n``) and passes ``shellcheck``;
- the units pass ``systemd-analyze verify`` (it works without systemd as PID 1;
  the venv path is pointed at a stub so the ExecStart check can pass), and,
  parsed here, carry the settings the cluster relies on: ordering after
  containerd and the network, Restart=always, /etc/default/kubepy,
  KillMode=process for the kubelet, ExecStart in the venv common.sh makes;
- every kubepy flag a unit or script passes exists in ``kubepy <cmd> --help``,
  and the paths and names the units and scripts share agree;
- the Vagrantfile is valid Ruby, evaluates (under a recording stand-in for
  Vagrant's DSL) to the machines, addresses, providers and provisioners the
  settings ask for, and rejects bad settings; ``vagrant validate`` too when
  vagrant is installed (.ci/install installs it with vagrant-libvirt).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VAGRANT_DIR = ROOT / "vagrant"
UNIT_DIR = ROOT / "systemd"
UNITS = ["kubepy-controlplane", "kubepy-kubelet", "kubepy-proxy", "kubepy-netpol", "kubepy-dns", "kubepy-ingress"]
# Node agents that need no address of their own (the network-policy agent reads its pod CIDR from its Node).
NO_ADDRESS_UNITS = {"kubepy-netpol"}
SHUTDOWN_UNIT = "kubepy-shutdown"   # oneshot: stops the pods at shutdown
SCRIPTS = sorted([*VAGRANT_DIR.glob("*.sh"), VAGRANT_DIR / "build-box", VAGRANT_DIR / "build-wheelhouse"])
VENV_BIN = "/opt/kubepy/venv/bin/"
ENV_FILE = "/etc/default/kubepy"


def _unit(name: str) -> configparser.ConfigParser:
    # strict=False + a multi-value dict: systemd allows repeated keys (EnvironmentFile=, After=).
    class MultiDict(dict):
        def __setitem__(self, key, value):
            if key in self and isinstance(value, list) and isinstance(self[key], list):
                self[key].extend(value)
            else:
                super().__setitem__(key, value)

    cp = configparser.RawConfigParser(strict=False, dict_type=MultiDict, interpolation=None)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read(UNIT_DIR / f"{name}.service")
    return cp


def _values(unit: configparser.ConfigParser, section: str, key: str) -> list[str]:
    raw = unit.get(section, key, fallback="") or ""
    return [v.strip() for v in raw.splitlines() if v.strip()]


def _words(unit: configparser.ConfigParser, section: str, key: str) -> set[str]:
    return {w for v in _values(unit, section, key) for w in v.split()}


def _exec_start(name: str) -> list[str]:
    values = _values(_unit(name), "Service", "ExecStart")
    assert len(values) == 1, f"{name}: exactly one ExecStart, got {values}"
    return shlex.split(values[0])


def _common_sh_vars() -> dict[str, str]:
    """Simple NAME=value settings of vagrant/lib.sh (comments stripped)."""
    out = {}
    for line in (VAGRANT_DIR / "lib.sh").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=([^\s(][^\s]*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _help(*cmd: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "kubepy", *cmd, "--help"], check=False, capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def _flags_after(words: list[str], sub: str) -> list[str]:
    """The --flags in ``words`` after the kubepy subcommand ``sub``."""
    i = words.index(sub)
    return [w.split("=", 1)[0] for w in words[i + 1:] if w.startswith("--")]


# -- shell scripts ------------------------------------------------------------------------

def test_scripts_exist_and_are_executable():
    for name in ("common.sh", "controlplane.sh", "worker.sh", "lib.sh", "build-box", "build-wheelhouse"):
        assert (VAGRANT_DIR / name).is_file(), name
    for script in SCRIPTS:
        if script.name != "lib.sh":   # sourced, not run
            assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    cp = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    cp = subprocess.run(["shellcheck", "-x", "--shell=bash", str(script.relative_to(ROOT))],
                        check=False, capture_output=True, text=True, cwd=ROOT)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_shellcheck_catches_a_broken_script(tmp_path):
    """The check above can fail: an unquoted expansion and a syntax error are reported."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck not installed (apt-get install shellcheck); .ci/install installs it")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert subprocess.run(["shellcheck", str(bad)], check=False, capture_output=True).returncode != 0
    bad.write_text("#!/usr/bin/env bash\nif true; then\n")
    assert subprocess.run(["bash", "-n", str(bad)], check=False, capture_output=True).returncode != 0


# -- systemd units ----------------------------------------------------------------------------

def _verify(unit_files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, unit_files)],
                          check=False, capture_output=True, text=True, timeout=60)


def _stubbed_units(tmp_path: Path, texts: dict[str, str]) -> list[Path]:
    """The units with the venv pointed at a stub `kubepy` (verify checks ExecStart is executable)."""
    stub_bin = tmp_path / "venv" / "bin"
    stub_bin.mkdir(parents=True)
    (stub_bin / "kubepy").write_text("#!/bin/sh\nexit 0\n")
    (stub_bin / "kubepy").chmod(0o755)
    files = []
    for name, text in texts.items():
        f = tmp_path / f"{name}.service"
        f.write_text(text.replace(VENV_BIN, f"{stub_bin}/"))
        files.append(f)
    return files


def test_systemd_analyze_verify(tmp_path):
    texts = {u: (UNIT_DIR / f"{u}.service").read_text() for u in [*UNITS, SHUTDOWN_UNIT]}
    cp = _verify(_stubbed_units(tmp_path, texts))
    # Warnings (unknown keys, bad values) do not change the exit status: any output is a failure.
    assert cp.returncode == 0 and not cp.stderr.strip() and not cp.stdout.strip(), cp.stdout + cp.stderr


def test_systemd_analyze_verify_catches_mistakes(tmp_path):
    text = (UNIT_DIR / "kubepy-kubelet.service").read_text()
    broken = text.replace("KillMode=process", "KillMode=procss").replace("Restart=always", "Restrat=always")
    cp = _verify(_stubbed_units(tmp_path, {"kubepy-kubelet": broken}))
    assert "procss" in cp.stderr and "Restrat" in cp.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_settings(name):
    unit = _unit(name)
    assert unit.has_section("Unit") and unit.has_section("Service") and unit.has_section("Install")
    assert _values(unit, "Service", "Restart") == ["always"]
    assert float(_values(unit, "Service", "RestartSec")[0]) > 0
    assert _values(unit, "Unit", "StartLimitIntervalSec") == ["0"], "a daemon waiting for its peers must not give up"
    assert int(_values(unit, "Service", "LimitNOFILE")[0]) >= 65536
    assert ENV_FILE in _values(unit, "Service", "EnvironmentFile")
    assert {"network-online.target"} <= _words(unit, "Unit", "After")
    assert {"network-online.target"} <= _words(unit, "Unit", "Wants")
    assert _values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert _values(unit, "Service", "SyslogIdentifier") == [name]
    # journald gets the logs: nothing redirects them elsewhere.
    for key in ("StandardOutput", "StandardError"):
        assert _values(unit, "Service", key) in ([], ["journal"])
    argv = _exec_start(name)
    assert argv[0] == VENV_BIN + "kubepy"
    assert argv[1] == name.removeprefix("kubepy-")


def test_kubelet_unit():
    unit = _unit("kubepy-kubelet")
    assert _values(unit, "Service", "KillMode") == ["process"], "a kubelet restart must not kill the pods"
    assert "containerd.service" in _words(unit, "Unit", "After")
    assert "containerd.service" in _words(unit, "Unit", "Wants")
    # The bootstrap token comes from a 0600 file, never from the command line or the environment.
    argv = _exec_start("kubepy-kubelet")
    assert argv[argv.index("--bootstrap-token-file") + 1] == "/etc/kubepy/bootstrap-token"
    assert "--bootstrap-token" not in argv
    assert not [f for f in _values(unit, "Service", "EnvironmentFile") if "bootstrap" in f]


def test_no_secret_on_any_command_line():
    """No unit or script passes a token or key as an argument (ps shows arguments to every user)."""
    for name in UNITS:
        text = "\n".join(_values(_unit(name), "Service", "ExecStart"))
        assert not re.search(r"--(bootstrap-)?token(?!-file)\b", text), name
        assert "BOOTSTRAP_TOKEN" not in text, name
    for script in SCRIPTS:
        text = script.read_text()
        assert not re.search(r"--(bootstrap-)?token\s", text), script.name
        assert "bootstrap.env" not in text or script.name == "lib.sh", script.name  # lib.sh only removes it


def test_token_file_paths_agree():
    lib = _common_sh_vars()
    token_file = lib["BOOTSTRAP_TOKEN_FILE"].replace("$ETC", lib["ETC"])
    assert f"--bootstrap-token-file {token_file}" in " ".join(_exec_start("kubepy-kubelet"))
    cp = (VAGRANT_DIR / "controlplane.sh").read_text()
    m = re.search(r'"\$KUBEPY" token create (.*)', cp)
    assert m, "controlplane.sh makes the published token with kubepy token create"
    known = set(re.findall(r"--[a-z0-9-]+", _help("token", "create")))
    flags = re.findall(r"(?<!\S)--[a-z0-9-]+", m.group(1))
    assert "--ttl" in flags and set(flags) <= known, flags
    from kubepy.bootstraptoken import parse_ttl

    ttl = parse_ttl(lib["TOKEN_TTL"])
    reuse = int(lib["TOKEN_REUSE_MINUTES"]) * 60
    # A reused published token still has hours left for the VMs that join with it.
    assert ttl.total_seconds() - reuse >= 6 * 3600


def test_shutdown_unit_stops_pods_between_kubelet_and_containerd():
    unit = _unit(SHUTDOWN_UNIT)
    assert _values(unit, "Service", "Type") == ["oneshot"]
    assert _values(unit, "Service", "RemainAfterExit") == ["yes"]
    # Stop order is the reverse of start order: after the kubelet stops, before containerd does.
    assert "containerd.service" in _words(unit, "Unit", "After")
    assert "kubepy-kubelet.service" in _words(unit, "Unit", "Before")
    argv = shlex.split(_values(unit, "Service", "ExecStop")[0])
    assert argv[:2] == [VENV_BIN + "kubepy", "stop-pods"]
    known = set(re.findall(r"--[a-z0-9-]+", _help("stop-pods")))
    assert set(_flags_after(argv, "stop-pods")) <= known
    lib = _common_sh_vars()
    assert lib["SHUTDOWN_UNIT"] == SHUTDOWN_UNIT
    assert f"--container-runtime-endpoint {lib['CONTAINERD_SOCKET']}" in " ".join(argv)
    assert f"--containerd-namespace {lib['CONTAINERD_NAMESPACE']}" in " ".join(argv)
    assert float(_values(unit, "Service", "TimeoutStopSec")[0]) > float(argv[argv.index("--grace-period") + 1])


def test_controlplane_unit_stops_children_in_order():
    assert _values(_unit("kubepy-controlplane"), "Service", "KillMode") == ["mixed"]


ADDON_UNITS = {"kubepy-proxy": "proxy", "kubepy-netpol": "netpol", "kubepy-dns": "dns"}


@pytest.mark.parametrize("name", sorted(ADDON_UNITS))
def test_proxy_and_dns_come_after_the_kubelet(name):
    """They start once the node has joined and their own kubeconfig is there."""
    unit = _unit(name)
    assert "kubepy-kubelet.service" in _words(unit, "Unit", "After")
    pre = " ".join(_values(unit, "Service", "ExecStartPre"))
    assert "/var/lib/kubepy/kubelet/kubelet.kubeconfig" in pre
    assert f"/etc/kubepy/{ADDON_UNITS[name]}.kubeconfig" in pre


def test_addons_run_on_their_own_identities():
    """kube-proxy, DNS and the policy agent each on the kubeconfig the API server issues for its user; no
    unit but the kubelet's reads the kubelet's credentials, and none reads the admin's (system:masters)."""
    from kubepy.api import auth
    from kubepy.api.main import COMPONENT_IDENTITIES
    from kubepy.lab.cluster import ADDON_KUBECONFIGS

    lib = _common_sh_vars()
    lib_addons = re.search(r"^ADDON_KUBECONFIGS=\(([^)]*)\)", (VAGRANT_DIR / "lib.sh").read_text(),
                           re.MULTILINE).group(1).split()
    assert sorted(lib_addons) == sorted(ADDON_KUBECONFIGS) == sorted(ADDON_UNITS.values())
    assert {COMPONENT_IDENTITIES[n] for n in lib_addons} == {auth.KUBE_PROXY_USER, auth.DNS_USER, auth.NETPOL_USER}
    for unit, stem in ADDON_UNITS.items():
        argv = _exec_start(unit)
        assert argv[argv.index("--kubeconfig") + 1] == f"{lib['ETC']}/{stem}.kubeconfig", unit
    for unit in UNITS:
        text = "\n".join(_values(_unit(unit), "Service", "ExecStart") + _values(_unit(unit), "Service", "ExecStartPre"))
        assert "admin.kubeconfig" not in text, unit
        assert "--kubeconfig /var/lib/kubepy/kubelet/kubelet.kubeconfig" not in text, unit
    # The control plane installs the copies it publishes (with several control planes, naming the virtual
    # address and every API server) before it starts its node's daemons, and publishes them for the workers
    # (through the synced folder and the Vagrantfile's copy); a worker installs them when it joins.
    cp = (VAGRANT_DIR / "controlplane.sh").read_text()
    assert cp.index('write_file "$PUBLISH_DIR/$name.kubeconfig"') < cp.index('install_addon_kubeconfigs "$PUBLISH_DIR"')
    assert cp.index('install_addon_kubeconfigs "$PUBLISH_DIR"') < cp.index("ensure_service kubepy-proxy")
    assert re.search(r'for f in "\$\{addon_files\[@\]\}" admin.kubeconfig bootstrap-token ca.crt', cp)
    worker = (VAGRANT_DIR / "worker.sh").read_text()
    assert worker.index('install_addon_kubeconfigs "$SHARED_DIR"') < worker.index("ensure_service kubepy-proxy")
    published = re.search(r"^PUBLISHED = %w\[([^\]]*)\]", (ROOT / "Vagrantfile").read_text(), re.MULTILINE)
    assert {f"{n}.kubeconfig" for n in lib_addons} <= set(published.group(1).split())


def test_install_addon_kubeconfigs(tmp_path):
    """lib.sh's install_addon_kubeconfigs: 0600 copies, the daemons restarted when one changed, and a clear
    error (not a node whose add-ons never start) when the control plane published none."""
    src, etc = tmp_path / "published", tmp_path / "etc"
    src.mkdir()
    for n in ("proxy", "netpol", "dns"):
        (src / f"{n}.kubeconfig").write_text(f"user: {n}\n")
        (src / f"{n}.kubeconfig").chmod(0o644)

    def run(*steps: str) -> subprocess.CompletedProcess:
        script = (f'. {VAGRANT_DIR / "lib.sh"}; ETC={etc}; RESTART_MARK={tmp_path}/restart; '
                  + "; ".join(steps))
        return subprocess.run(["bash", "-euc", script], check=False, capture_output=True, text=True, timeout=30)

    cp = run(f"install_addon_kubeconfigs {src}")
    assert cp.returncode == 0, cp.stderr
    for n in ("proxy", "netpol", "dns"):
        assert (etc / f"{n}.kubeconfig").read_text() == f"user: {n}\n"
        assert oct((etc / f"{n}.kubeconfig").stat().st_mode & 0o777) == oct(0o600)
    assert (tmp_path / "restart").exists()
    (tmp_path / "restart").unlink()
    assert run(f"install_addon_kubeconfigs {src}").returncode == 0
    assert not (tmp_path / "restart").exists()   # nothing changed: no restart
    (src / "dns.kubeconfig").unlink()
    cp = run(f"install_addon_kubeconfigs {src}")
    assert cp.returncode != 0 and f"{src}/dns.kubeconfig is missing" in cp.stderr


def test_the_control_plane_vm_runs_the_proxy_whose_routes_reach_webhook_pods():
    """The API server calls admission webhooks at pod IPs from the advertised private address; on the
    control-plane VM only the proxy's host-gw routes lead there, so the proxy must run on it too."""
    script = (ROOT / "vagrant" / "controlplane.sh").read_text()
    assert "ensure_service kubepy-proxy" in script
    assert "--advertise-address ${NODE_IP}" in (UNIT_DIR / "kubepy-controlplane.service").read_text()


def test_units_use_the_private_address():
    """Every daemon is given ${NODE_IP}; none names eth0."""
    for name in UNITS:
        text = (UNIT_DIR / f"{name}.service").read_text()
        assert "eth0" not in "\n".join(_values(_unit(name), "Service", "ExecStart"))
        assert ("${NODE_IP}" in text) is (name not in NO_ADDRESS_UNITS), name
    assert "--advertise-address ${NODE_IP}" in " ".join(_exec_start("kubepy-controlplane"))
    assert "--node-ip ${NODE_IP}" in " ".join(_exec_start("kubepy-kubelet"))
    assert "--listen ${NODE_IP}:53" in " ".join(_exec_start("kubepy-dns"))


# -- units and scripts agree with the CLI and with each other ---------------------------------------

@pytest.mark.parametrize("name", UNITS)
def test_unit_flags_exist_in_the_cli(name):
    argv = _exec_start(name)
    sub = argv[1]
    known = set(re.findall(r"--[a-z0-9-]+", _help(sub)))
    unknown = [f for f in _flags_after(argv, sub) if f not in known]
    assert not unknown, f"{name}: kubepy {sub} has no {unknown}"


def test_extra_args_in_scripts_exist_in_the_cli():
    """Flags the scripts put in /etc/default/kubepy's *_EXTRA_ARGS (e.g. the control plane's node label)."""
    text = (VAGRANT_DIR / "common.sh").read_text() + (VAGRANT_DIR / "lib.sh").read_text()
    checked = 0
    for var, sub in (("extra_kubelet", "kubelet"), ("extra_proxy", "proxy"), ("extra_netpol", "netpol"),
                     ("extra_dns", "dns"),
                     ("extra_controlplane", "controlplane")):
        for m in re.finditer(rf'{var}\+?="([^"]*)"', text):
            known = set(re.findall(r"--[a-z0-9-]+", _help(sub)))
            for flag in re.findall(r"--[a-z0-9-]+", m.group(1)):
                assert flag in known, f"kubepy {sub} has no {flag}"
                checked += 1
    # The kubelet's topology labels (--node-labels); the control plane's node-role label is kubectl's.
    assert checked >= 1 and re.search(r'extra_kubelet="', text)


@pytest.mark.parametrize("zone,region,want", [
    ("", "", ""),
    ("a", "", "--node-labels topology.kubernetes.io/zone=a"),
    ("b", "eu", "--node-labels topology.kubernetes.io/zone=b,topology.kubernetes.io/region=eu"),
    ("", "eu", "--node-labels topology.kubernetes.io/region=eu"),
])
def test_common_sh_gives_the_kubelet_its_topology_labels(zone, region, want):
    text = (VAGRANT_DIR / "common.sh").read_text()
    start = text.index("topology=\"\"")
    end = text.index("\n", text.index("extra_kubelet=", start))
    cp = subprocess.run(["bash", "-euc", text[start:end] + '\nprintf %s "$extra_kubelet"'], check=True,
                        capture_output=True, text=True, env={"KUBEPY_ZONE": zone, "KUBEPY_REGION": region})
    assert cp.stdout == want


def test_scripts_call_no_unknown_kubepy_flags():
    """Any `$KUBEPY <cmd> --flag` or `kubepy <cmd> --flag` in the scripts exists in the CLI."""
    subs = {"apiserver", "scheduler", "controller-manager", "proxy", "netpol", "dns", "kubelet", "controlplane",
            "ingress"}
    for script in SCRIPTS:
        for line in script.read_text().splitlines():
            m = re.search(r'(?:"\$KUBEPY"|\$KUBEPY|/bin/kubepy)\s+(\S+)(.*)', line)
            if m and m.group(1) in subs:
                known = set(re.findall(r"--[a-z0-9-]+", _help(m.group(1))))
                for flag in re.findall(r"(?<!\S)--[a-z0-9-]+", m.group(2)):
                    assert flag in known, f"{script.name}: kubepy {m.group(1)} has no {flag}"


def test_the_flag_check_can_fail():
    known = set(re.findall(r"--[a-z0-9-]+", _help("kubelet")))
    assert "--node-ip" in known and "--register-with-taints" not in known


def test_paths_and_names_agree():
    from kubepy.kubelet.config import KubeletConfig
    from kubepy.lab.cluster import PAUSE_IMAGE

    lib = _common_sh_vars()
    assert lib["VENV"] + "/bin/" == VENV_BIN
    assert lib["ENV_FILE"] == ENV_FILE
    assert lib["PAUSE_IMAGE"] == PAUSE_IMAGE
    kubelet = " ".join(_exec_start("kubepy-kubelet"))
    assert f"--pod-infra-container-image {PAUSE_IMAGE}" in kubelet
    assert f"--root-dir {lib['KUBELET_DIR']}" in kubelet
    assert f"--container-runtime-endpoint {lib['CONTAINERD_SOCKET']}" in kubelet
    assert f"--containerd-namespace {lib['CONTAINERD_NAMESPACE']}" in kubelet
    assert lib["CONTAINERD_NAMESPACE"] == KubeletConfig().containerd_namespace
    assert f"--ca-file {lib['ETC']}/ca.crt" in kubelet
    own = lib["KUBELET_KUBECONFIG"].replace("$KUBELET_DIR", lib["KUBELET_DIR"])
    assert own == str(KubeletConfig(root_dir=Path(lib["KUBELET_DIR"])).own_kubeconfig)
    assert "--kubeconfig" not in " ".join(_exec_start("kubepy-kubelet"))   # it writes its own after joining
    assert f"--data-dir {lib['CP_DIR']}" in " ".join(_exec_start("kubepy-controlplane"))
    units_in_lib = re.search(r"^UNITS=\(([^)]*)\)", (VAGRANT_DIR / "lib.sh").read_text(), re.MULTILINE).group(1).split()
    assert sorted(units_in_lib) == sorted(UNITS)
    # Every variable the units read is written to /etc/default/kubepy.
    common = (VAGRANT_DIR / "common.sh").read_text()
    written = set(re.findall(r"^([A-Z_]+)=", common, re.MULTILINE))
    for name in UNITS:
        text = "\n".join(_values(_unit(name), "Service", "ExecStart"))
        used = set(re.findall(r"\$\{?([A-Z_]+)\}?", text))
        assert used <= written, f"{name} reads {used - written}, which common.sh does not write"


def test_controlplane_taint_and_label():
    """No --register-with-taints in the kubelet: controlplane.sh taints with kubectl."""
    lib = _common_sh_vars()
    assert lib["CONTROLPLANE_TAINT"] == "node-role.kubernetes.io/control-plane:NoSchedule"
    cp = (VAGRANT_DIR / "controlplane.sh").read_text()
    assert re.search(r'kc taint node "\$NODE_NAME" "\$CONTROLPLANE_TAINT"', cp)
    # The label too, by the admin: NodeRestriction refuses a kubelet node-role.kubernetes.io/ labels.
    assert re.search(r'kc label node "\$NODE_NAME" "\$CONTROLPLANE_LABEL"', cp)
    assert not re.search(r"--node-labels[^\n]*node-role", (VAGRANT_DIR / "common.sh").read_text())


# -- the Vagrantfile ---------------------------------------------------------------------------------

RECORDER = r"""
require "json"
# A stand-in for Vagrant's configuration DSL: records every setting and call.
class Rec
  def initialize(path, log)
    @path = path
    @log = log
  end

  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      @log << { "at" => @path, "set" => n.chomp("="), "value" => args[0] }
      return args[0]
    end
    entry = { "at" => @path, "call" => n, "args" => args.map { |a| a.is_a?(Symbol) ? a.to_s : a },
              "opts" => kw.to_h { |k, v| [k.to_s, v.is_a?(Symbol) ? v.to_s : v] } }
    if blk
      entry["block"] = true
      @log << entry
      sub = Rec.new(@path + [n, *args.map(&:to_s)], @log)
      blk.call(sub, sub) unless n == "ruby"   # trigger bodies run on the host at vagrant time
      return sub
    end
    return Rec.new(@path + [n], @log) if args.empty? && kw.empty?

    @log << entry
    self
  end

  def respond_to_missing?(*) = true
end

module Vagrant
  LOG = []
  def self.configure(version)
    raise "configuration version #{version}" unless version == "2"

    yield Rec.new([], LOG)
  end
end

load ARGV[0]
puts JSON.generate(Vagrant::LOG)
"""


def _evaluate_vagrantfile(tmp_path: Path, **env: str) -> tuple[int, list[dict], str]:
    recorder = tmp_path / "recorder.rb"
    recorder.write_text(RECORDER)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBEPY_")}
    cp = subprocess.run(["ruby", str(recorder), str(ROOT / "Vagrantfile")], check=False, capture_output=True, text=True,
                        env={**clean, **env}, cwd=ROOT, timeout=60)
    log = json.loads(cp.stdout) if cp.returncode == 0 else []
    return cp.returncode, log, cp.stderr


def _machines(log: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in log:
        at = e["at"]
        if len(at) >= 3 and at[:2] == ["vm", "define"]:
            m = out.setdefault(at[2], {"provision": [], "network": [], "triggers": []})
            if at[3:] == ["vm"] and e.get("set") == "hostname":
                m["hostname"] = e["value"]
            if at[3:] == ["vm"] and e.get("call") == "network":
                m["network"].append(e)
            if at[3:] == ["vm"] and e.get("call") == "provision":
                m["provision"].append(e)
            if at[3:] == ["trigger"] and e.get("call") in ("after", "before"):
                m["triggers"].append(e)
    return out




def test_vagrantfile_is_valid_ruby():
    cp = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], check=False, capture_output=True, text=True)
    assert cp.returncode == 0 and "Syntax OK" in cp.stdout, cp.stderr


def test_vagrantfile_defaults(tmp_path):
    code, log, err = _evaluate_vagrantfile(tmp_path)
    assert code == 0, err
    machines = _machines(log)
    assert list(machines) == ["controlplane", "worker1", "worker2"]
    ips = {}
    for name, m in machines.items():
        (net,) = m["network"]
        assert net["args"] == ["private_network"]
        assert net["opts"]["libvirt__dhcp_enabled"] is False
        ips[name] = net["opts"]["ip"]
        role = "controlplane" if name == "controlplane" else "worker"
        assert [p["args"][0] for p in m["provision"]] == ["common", role]
        assert [p["opts"]["path"] for p in m["provision"]] == ["vagrant/common.sh", f"vagrant/{role}.sh"]
        for p in m["provision"]:
            assert (ROOT / p["opts"]["path"]).is_file()
            env = p["opts"]["env"]
            assert env["KUBEPY_ROLE"] == role and env["KUBEPY_SUBNET"] == "192.168.56"
            assert env["KUBEPY_NODE_IP"] == ips[name] and env["KUBEPY_CONTROLPLANE_IP"] == "192.168.56.10"
            assert env["KUBEPY_NODE_NAME"] == m["hostname"]
            assert all(isinstance(v, str) for v in env.values())
    assert ips == {"controlplane": "192.168.56.10", "worker1": "192.168.56.11", "worker2": "192.168.56.12"}
    # The control plane copies what it published to the host; a destroyed one's files are removed.
    assert [t["args"] for t in machines["controlplane"]["triggers"]] == [["up", "provision", "reload"], ["destroy"]]
    assert not machines["worker1"]["triggers"]
    sets = {(tuple(e["at"]), e["set"]): e["value"] for e in log if "set" in e}
    assert sets[(("vm",), "box")] == "debian/bookworm64"
    libvirt, vbox = ("vm", "provider", "libvirt"), ("vm", "provider", "virtualbox")
    assert sets[(libvirt, "driver")] == "kvm" and (libvirt, "cpu_mode") not in sets
    assert sets[(libvirt, "cpus")] == 2 and sets[(libvirt, "memory")] == 2048
    assert sets[(vbox, "cpus")] == 2 and sets[(vbox, "memory")] == 2048
    synced = [e for e in log if e.get("call") == "synced_folder"]
    assert synced and synced[0]["args"] == [".", "/vagrant"] and synced[0]["opts"]["type"] == "rsync"


def test_vagrantfile_settings(tmp_path):
    code, log, err = _evaluate_vagrantfile(
        tmp_path, KUBEPY_WORKERS="3", KUBEPY_SUBNET="10.20.30", KUBEPY_BOX="kubepy/debian12",
        KUBEPY_LIBVIRT_DRIVER="qemu", KUBEPY_CPUS="1", KUBEPY_MEMORY="1024")
    assert code == 0, err
    machines = _machines(log)
    assert list(machines) == ["controlplane", "worker1", "worker2", "worker3"]
    assert [m["network"][0]["opts"]["ip"] for m in machines.values()] == [
        "10.20.30.10", "10.20.30.11", "10.20.30.12", "10.20.30.13"]
    sets = {(tuple(e["at"]), e["set"]): e["value"] for e in log if "set" in e}
    libvirt = ("vm", "provider", "libvirt")
    assert sets[(libvirt, "driver")] == "qemu"
    assert sets[(libvirt, "cpu_mode")] == "custom" and sets[(libvirt, "cpu_model")] == "qemu64"
    assert sets[(libvirt, "cpus")] == 1 and sets[(libvirt, "memory")] == 1024
    assert sets[(("vm",), "box")] == "kubepy/debian12"
    env = machines["worker3"]["provision"][1]["opts"]["env"]
    assert env["KUBEPY_NODES"].split(",") == [
        "kubepy-controlplane=10.20.30.10", "kubepy-worker1=10.20.30.11", "kubepy-worker2=10.20.30.12",
        "kubepy-worker3=10.20.30.13"]

    code, log, err = _evaluate_vagrantfile(tmp_path, KUBEPY_WORKERS="0")
    assert code == 0, err
    assert list(_machines(log)) == ["controlplane"]


def test_vagrantfile_zones_and_region(tmp_path):
    code, log, err = _evaluate_vagrantfile(tmp_path, KUBEPY_WORKERS="3", KUBEPY_ZONES="a, b", KUBEPY_REGION="eu")
    assert code == 0, err
    envs = {name: m["provision"][0]["opts"]["env"] for name, m in _machines(log).items()}
    # Workers take the zones in turn (spreading has somewhere to go); the control plane is in the first.
    assert {n: e["KUBEPY_ZONE"] for n, e in envs.items()} == {"controlplane": "a", "worker1": "a", "worker2": "b",
                                                              "worker3": "a"}
    assert {e["KUBEPY_REGION"] for e in envs.values()} == {"eu"}
    code, log, err = _evaluate_vagrantfile(tmp_path)
    assert {m["provision"][0]["opts"]["env"]["KUBEPY_ZONE"] for m in _machines(log).values()} == {""}


@pytest.mark.parametrize("env", [{"KUBEPY_WORKERS": "two"}, {"KUBEPY_WORKERS": "-1"}, {"KUBEPY_SUBNET": "10.0"},
                                 {"KUBEPY_SUBNET": "300.1.2"}, {"KUBEPY_LIBVIRT_DRIVER": "xen"},
                                 {"KUBEPY_MEMORY": "lots"}, {"KUBEPY_INSTALL": "sometimes"},
                                 {"KUBEPY_ZONES": "a,b c"}, {"KUBEPY_REGION": "-eu"}])
def test_vagrantfile_rejects_bad_settings(tmp_path, env):
    code, _, err = _evaluate_vagrantfile(tmp_path, **env)
    assert code != 0 and next(iter(env)) in err


def _vagrant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBEPY_", "VAGRANT_"))}
    # A private VAGRANT_HOME, and the .vagrant directory outside the work tree.
    return subprocess.run(["vagrant", *args], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**clean, **env, "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
                               "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant"),
                               "VAGRANT_CHECKPOINT_DISABLE": "1"})


@pytest.mark.parametrize("env", [{}, {"KUBEPY_LIBVIRT_DRIVER": "qemu", "KUBEPY_WORKERS": "1"}])
def test_vagrant_validate(tmp_path, env):
    """Vagrant's own checks, the libvirt provider's settings included."""
    cp = _vagrant(tmp_path, "validate", VAGRANT_DEFAULT_PROVIDER="libvirt", **env)
    assert cp.returncode == 0 and "validated successfully" in cp.stdout, cp.stdout + cp.stderr


# -- several control planes (KUBEPY_CONTROLPLANES) ---------------------------------------------

def test_vagrantfile_three_control_planes(tmp_path):
    code, log, err = _evaluate_vagrantfile(tmp_path, KUBEPY_CONTROLPLANES="3", KUBEPY_WORKERS="2")
    assert code == 0, err
    machines = _machines(log)
    assert list(machines) == ["controlplane", "controlplane2", "controlplane3", "worker1", "worker2"]
    ips = {name: m["network"][0]["opts"]["ip"] for name, m in machines.items()}
    assert ips == {"controlplane": "192.168.56.10", "controlplane2": "192.168.56.11", "controlplane3": "192.168.56.12",
                   "worker1": "192.168.56.13", "worker2": "192.168.56.14"}
    for name, m in machines.items():
        role = "worker" if name.startswith("worker") else "controlplane"
        assert [p["opts"]["path"] for p in m["provision"]] == ["vagrant/common.sh", f"vagrant/{role}.sh"]
        env = m["provision"][0]["opts"]["env"]
        assert env["KUBEPY_CONTROLPLANE_IP"] == "192.168.56.10"
        assert env["KUBEPY_CONTROLPLANE_IPS"] == "192.168.56.10,192.168.56.11,192.168.56.12"
        assert env["KUBEPY_API_VIP"] == "192.168.56.100"
        assert m["hostname"] == f"kubepy-{name}"
    # Only the first control plane publishes to the host (and its destruction removes what it published).
    assert [t["args"] for t in machines["controlplane"]["triggers"]] == [["up", "provision", "reload"], ["destroy"]]
    assert not machines["controlplane2"]["triggers"] and not machines["worker1"]["triggers"]
    # One control plane (the default): no virtual address, the same addresses as ever.
    code, log, err = _evaluate_vagrantfile(tmp_path)
    env = _machines(log)["worker1"]["provision"][0]["opts"]["env"]
    assert env["KUBEPY_CONTROLPLANE_IPS"] == "192.168.56.10" and env["KUBEPY_API_VIP"] == ""


@pytest.mark.parametrize("env", [{"KUBEPY_CONTROLPLANES": "2"}, {"KUBEPY_CONTROLPLANES": "9"},
                                 {"KUBEPY_CONTROLPLANES": "3", "KUBEPY_API_VIP": "11"},
                                 {"KUBEPY_CONTROLPLANES": "3", "KUBEPY_API_VIP": "205"},
                                 {"KUBEPY_CONTROLPLANES": "3", "KUBEPY_API_VIP": "x"}])
def test_vagrantfile_rejects_bad_control_plane_settings(tmp_path, env):
    code, _, err = _evaluate_vagrantfile(tmp_path, **env)
    assert code != 0 and list(env)[-1] in err, err


def test_etcd_unit_and_join_files():
    from kubepy.lab.controlplanes import SHARED_FILES

    lib = (VAGRANT_DIR / "lib.sh").read_text()
    join = re.search(r"^JOIN_FILES=\(([^)]*)\)", lib, re.MULTILINE).group(1).split()
    assert tuple(join) == SHARED_FILES, "a joining VM copies what a joining lab control plane copies"
    unit = _unit("kubepy-etcd")
    assert _values(unit, "Service", "ExecStart") == ["/usr/bin/etcd"]
    assert _values(unit, "Service", "EnvironmentFile") == [_common_sh_vars()["ETCD_ENV"].replace("$ETC", "/etc/kubepy")]
    # The settings controlplane.sh writes are etcd's own environment variables (etcd --help names each flag).
    script = (VAGRANT_DIR / "controlplane.sh").read_text()
    written = set(re.findall(r"^ETCD_([A-Z_]+)=", script, re.MULTILINE))
    assert {"NAME", "DATA_DIR", "INITIAL_CLUSTER", "INITIAL_CLUSTER_STATE", "CLIENT_CERT_AUTH"} <= written
    if shutil.which("etcd"):
        flags = set(re.findall(r"--([a-z-]+)", subprocess.run(["etcd", "--help"], capture_output=True,
                                                             text=True).stdout + ""))
        for name in written:
            assert name.lower().replace("_", "-") in flags, f"etcd has no --{name.lower().replace('_', '-')}"


def test_etcd_unit_verifies(tmp_path):
    cp = _verify([UNIT_DIR / "kubepy-etcd.service"])
    assert cp.returncode == 0 and not cp.stderr.strip() and not cp.stdout.strip(), cp.stdout + cp.stderr


def test_common_sh_lists_every_api_server_own_first():
    """The kubelet's --server (API_SERVER) and the control plane's etcd endpoints: every control
    plane's, this node's own first if it has one (common.sh's own_first)."""
    text = (VAGRANT_DIR / "common.sh").read_text()
    start = text.index("own_first() {")
    end = text.index("\n}\n", start) + len("\n}\n")

    def servers(role: str, node_ip: str, ips: str, fmt: str = "https://%s:6443") -> str:
        code = f'IFS=, read -r -a cp_ips <<<"{ips}"\n' + text[start:end] + f'own_first "{fmt}"'
        return subprocess.run(["bash", "-euc", code], check=True, capture_output=True, text=True,
                              env={"ROLE": role, "NODE_IP": node_ip}).stdout

    assert servers("controlplane", "10.0.0.11", "10.0.0.10,10.0.0.11,10.0.0.12", "%s:2379") == \
        "10.0.0.11:2379,10.0.0.10:2379,10.0.0.12:2379"
    assert servers("controlplane", "10.0.0.10", "10.0.0.10") == "https://10.0.0.10:6443"
    assert servers("worker", "10.0.0.11", "10.0.0.10") == "https://10.0.0.10:6443"
    assert servers("controlplane", "10.0.0.12", "10.0.0.10,10.0.0.11,10.0.0.12") == \
        "https://10.0.0.12:6443,https://10.0.0.10:6443,https://10.0.0.11:6443"
    assert servers("worker", "10.0.0.13", "10.0.0.10,10.0.0.11,10.0.0.12") == \
        "https://10.0.0.10:6443,https://10.0.0.11:6443,https://10.0.0.12:6443"


def test_keepalived_follows_the_supervisor_s_ready_file():
    """The control plane's supervisor writes READY_FILE (--ready-file, common.sh), keepalived tracks it
    (controlplane.sh), and the unit marks it not ready however the supervisor ends (ExecStopPost)."""
    lib = (VAGRANT_DIR / "lib.sh").read_text()
    path = re.search(r"^READY_FILE=(\S+)", lib, re.M).group(1)
    assert "--ready-file $READY_FILE" in (VAGRANT_DIR / "common.sh").read_text()
    conf = (VAGRANT_DIR / "controlplane.sh").read_text()
    assert re.search(r"track_file kubepy_apiserver \{\n  file \$READY_FILE\n  weight -50\n", conf)
    assert "vrrp_script" not in conf and "track_script" not in conf
    unit = (VAGRANT_DIR.parent / "systemd" / "kubepy-controlplane.service").read_text()
    stop = re.search(r"^ExecStopPost=(.*)$", unit, re.M).group(1)
    assert f"f={path};" in stop and "echo 1 >" in stop and "$$f" in stop   # $$: systemd must not expand it
