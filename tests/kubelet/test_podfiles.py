"""Pod /etc files: hosts layout, DNS policies, dnsConfig merging, the mount map."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubepy.kubelet.podfiles import DNSConfig, parse_resolv_conf, render_hosts, resolve_dns, write_pod_files

HOST_RESOLV = """# written by someone
domain corp.example
search lab.example corp.example
nameserver 192.0.2.53
nameserver 192.0.2.54 ; comment
options edns0 timeout:2
"""


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    p = tmp_path / "host-resolv.conf"
    p.write_text(HOST_RESOLV)
    return p


def test_hosts_file_layout() -> None:
    text = render_hosts(
        hostname="web-1",
        pod_ip="10.244.1.5",
        host_aliases=[{"ip": "1.2.3.4", "hostnames": ["foo", "foo.local"]}, {"ip": "5.6.7.8"}],
    )
    assert text == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "10.244.1.5\tweb-1\n"
        "\n# Entries added by HostAliases.\n"
        "1.2.3.4\tfoo\tfoo.local\n"
    )


def test_hosts_without_aliases_has_no_alias_section() -> None:
    assert "HostAliases" not in render_hosts(hostname="a", pod_ip="10.0.0.2")


def test_parse_resolv_conf() -> None:
    cfg = parse_resolv_conf(HOST_RESOLV)
    assert cfg == DNSConfig(["192.0.2.53", "192.0.2.54"], ["lab.example", "corp.example"], ["edns0", "timeout:2"])


@pytest.mark.parametrize(
    ("policy", "dns_config", "expected"),
    [
        (
            "ClusterFirst",
            None,
            (
                "search ns1.svc.cluster.local svc.cluster.local cluster.local lab.example corp.example\n"
                "nameserver 10.96.0.10\noptions ndots:5\n"
            ),
        ),
        (
            "Default",
            None,
            (
                "search lab.example corp.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
                "options edns0 timeout:2\n"
            ),
        ),
        ("None", None, ""),
        (
            "None",
            {"nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}]},
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2\n",
        ),
        (
            "ClusterFirst",
            {
                "nameservers": ["10.96.0.10", "9.9.9.9"],
                "searches": ["cluster.local", "x.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}],
            },
            (
                "search ns1.svc.cluster.local svc.cluster.local cluster.local lab.example corp.example x.example\n"
                "nameserver 10.96.0.10\nnameserver 9.9.9.9\noptions ndots:1 single-request\n"
            ),
        ),
    ],
)
def test_dns_policies(tmp_path: Path, upstream: Path, policy: str, dns_config: dict | None, expected: str) -> None:
    mounts = write_pod_files(
        tmp_path / "pod",
        hostname="p",
        pod_ip="10.244.1.9",
        namespace="ns1",
        dns_policy=policy,
        upstream_resolv=upstream,
        dns_config=dns_config,
    )
    assert mounts["/etc/resolv.conf"].read_text() == expected


def test_nameservers_capped_at_three() -> None:
    cfg = resolve_dns(
        namespace="n",
        dns_policy="None",
        cluster_domain="cluster.local",
        dns_server="10.96.0.10",
        host=DNSConfig(),
        dns_config={"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]},
    )
    assert cfg.nameservers == ["1.1.1.1", "2.2.2.2", "3.3.3.3"]


def test_unknown_policy_rejected(tmp_path: Path, upstream: Path) -> None:
    with pytest.raises(ValueError):
        write_pod_files(
            tmp_path, hostname="p", pod_ip="10.0.0.2", namespace="n", dns_policy="Bogus", upstream_resolv=upstream
        )


def test_mount_map_hostname_subdomain_and_rewrite_keeps_inode(tmp_path: Path, upstream: Path) -> None:
    pod_dir = tmp_path / "pods" / "uid1"
    mounts = write_pod_files(
        pod_dir, hostname="web-0", pod_ip="10.244.1.7", namespace="prod", upstream_resolv=upstream, subdomain="web"
    )
    assert set(mounts) == {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    assert all(p.parent == pod_dir and p.is_file() for p in mounts.values())
    assert mounts["/etc/hostname"].read_text() == "web-0\n"
    assert "10.244.1.7\tweb-0.web.prod.svc.cluster.local\tweb-0\n" in mounts["/etc/hosts"].read_text()
    assert oct(mounts["/etc/hosts"].stat().st_mode & 0o777) == "0o644"
    inode = os.stat(mounts["/etc/hosts"]).st_ino
    write_pod_files(pod_dir, hostname="web-0", pod_ip="10.244.1.8", namespace="prod", upstream_resolv=upstream)
    assert os.stat(mounts["/etc/hosts"]).st_ino == inode
    assert "10.244.1.8\tweb-0\n" in mounts["/etc/hosts"].read_text()


def test_missing_upstream_resolv(tmp_path: Path) -> None:
    mounts = write_pod_files(
        tmp_path, hostname="p", pod_ip="10.0.0.2", namespace="n", upstream_resolv=tmp_path / "nope"
    )
    assert mounts["/etc/resolv.conf"].read_text() == (
        "search n.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )
