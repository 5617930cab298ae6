"""The HA lab's HAProxy file: the API servers, and with a dashboard port the control planes' dashboards,
behind the bridge's gateway; checked by HAProxy itself (``haproxy -c``)."""

from __future__ import annotations

import subprocess

from kubepy.lab.controlplanes import API_PORT, haproxy_config
from kubepy.lab.network import LabNetwork

NET = LabNetwork("kptest-hap", "172.30.250.0/24")


def sections(cfg: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in cfg.splitlines():
        if line and not line.startswith((" ", "#")):
            current = line.strip()
            out[current] = []
        elif line.strip() and current:
            out[current].append(line.strip())
    return out


def test_api_servers_only_without_a_dashboard_port():
    s = sections(haproxy_config(NET, 3, 6443))
    assert "frontend dashboard" not in s
    assert [ln.split()[2] for ln in s["backend apiservers"] if ln.startswith("server ")] == \
        [f"{NET.cp_ip(j)}:{API_PORT}" for j in (1, 2, 3)]


def test_dashboards_behind_the_gateway_each_checked():
    s = sections(haproxy_config(NET, 3, 6443, 8443))
    assert f"bind {NET.gateway}:8443" in s["frontend dashboard"]
    assert "default_backend dashboards" in s["frontend dashboard"]
    servers = [ln for ln in s["backend dashboards"] if ln.startswith("server ")]
    assert [ln.split()[2] for ln in servers] == [f"{NET.cp_ip(j)}:8443" for j in (1, 2, 3)]
    assert all(" check check-ssl " in ln for ln in servers)


def test_haproxy_accepts_the_file(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(NET, 3, 6443, 8443))
    cp = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
