"""A pod's /etc/hosts, /etc/resolv.conf and /etc/hostname, as the kubelet writes them.

The files live in the pod's directory on the node and are bind-mounted into
every container of the pod (``write_pod_files`` returns the mount map). The
rendering is pure (``render_hosts``, ``render_resolv_conf``); only
``write_pod_files`` touches the disk. Files are rewritten in place (same
inode), so containers that already bind-mount them see an update.

DNS policy follows Kubernetes (pkg/kubelet/network/dns):

- ``ClusterFirst`` (and ``ClusterFirstWithHostNet``): the cluster DNS server,
  ``search <ns>.svc.<domain> svc.<domain> <domain>`` followed by the host's
  search domains, ``options ndots:5``;
- ``Default``: the node's resolv.conf (servers, search, options);
- ``None``: nothing but ``dnsConfig``.

``dnsConfig`` (``nameservers``, ``searches``, ``options: [{name, value}]``)
is appended to any policy: duplicates dropped, an option given in
dnsConfig replaces the one of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DNSConfig",
    "parse_resolv_conf",
    "render_hosts",
    "render_resolv_conf",
    "resolve_dns",
    "write_pod_files",
]

MAX_NAMESERVERS = 3  # what glibc reads
MAX_SEARCH_DOMAINS = 32  # Kubernetes' MaxDNSSearchPaths
MAX_SEARCH_CHARS = 2048  # Kubernetes' MaxDNSSearchListChars
CLUSTER_FIRST_OPTIONS = ("ndots:5",)
POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")

HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
HOSTS_LOCAL = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)
HOST_ALIASES_HEADER = "\n# Entries added by HostAliases.\n"


@dataclass
class DNSConfig:
    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # "name" or "name:value"


# -- pure ---------------------------------------------------------------------
def render_hosts(
    *,
    hostname: str,
    pod_ip: str,
    host_aliases: Iterable[Mapping[str, Any]] = (),
    fqdn: str = "",
) -> str:
    """The pod's /etc/hosts, in the layout of Kubernetes' managed hosts file."""
    names = f"{fqdn}\t{hostname}" if fqdn else hostname
    text = HOSTS_HEADER + HOSTS_LOCAL + f"{pod_ip}\t{names}\n"
    aliases = [a for a in host_aliases if a.get("ip") and a.get("hostnames")]
    if aliases:
        text += HOST_ALIASES_HEADER
        for alias in aliases:
            text += f"{alias['ip']}\t" + "\t".join(alias["hostnames"]) + "\n"
    return text


def parse_resolv_conf(text: str) -> DNSConfig:
    """nameserver / search / domain / options lines; the last search or domain wins (as glibc)."""
    cfg = DNSConfig()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        fields = line.split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            cfg.nameservers.append(values[0])
        elif key in ("search", "domain"):
            cfg.searches = [v.rstrip(".") for v in values if v != "."]
        elif key == "options":
            cfg.options.extend(values)
    return cfg


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _merge_options(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    merged: dict[str, str] = {}
    for opt in [*base, *extra]:
        merged[opt.split(":", 1)[0]] = opt
    return list(merged.values())


def _config_options(dns_config: Mapping[str, Any]) -> list[str]:
    out = []
    for opt in dns_config.get("options") or ():
        name = opt.get("name")
        if not name:
            continue
        value = opt.get("value")
        out.append(f"{name}:{value}" if value not in (None, "") else name)
    return out


def resolve_dns(
    *,
    namespace: str,
    dns_policy: str,
    cluster_domain: str,
    dns_server: str,
    host: DNSConfig,
    dns_config: Mapping[str, Any] | None,
) -> DNSConfig:
    """The DNS settings a pod gets, from its policy, the node's settings and dnsConfig."""
    if dns_policy not in POLICIES:
        raise ValueError(f"unknown dnsPolicy {dns_policy!r}")
    if dns_policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        cluster_search = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        cfg = DNSConfig([dns_server], _dedupe([*cluster_search, *host.searches]), list(CLUSTER_FIRST_OPTIONS))
    elif dns_policy == "Default":
        cfg = DNSConfig(list(host.nameservers), list(host.searches), list(host.options))
    else:
        cfg = DNSConfig()
    if dns_config:
        cfg.nameservers = _dedupe([*cfg.nameservers, *(dns_config.get("nameservers") or ())])
        cfg.searches = _dedupe([*cfg.searches, *(dns_config.get("searches") or ())])
        cfg.options = _merge_options(cfg.options, _config_options(dns_config))
    cfg.nameservers = cfg.nameservers[:MAX_NAMESERVERS]
    searches: list[str] = []
    for s in cfg.searches[:MAX_SEARCH_DOMAINS]:
        if len(" ".join([*searches, s])) > MAX_SEARCH_CHARS:
            break
        searches.append(s)
    cfg.searches = searches
    return cfg


def render_resolv_conf(cfg: DNSConfig) -> str:
    lines = []
    if cfg.searches:
        lines.append("search " + " ".join(cfg.searches))
    lines += [f"nameserver {ns}" for ns in cfg.nameservers]
    if cfg.options:
        lines.append("options " + " ".join(cfg.options))
    return "\n".join(lines) + "\n" if lines else ""


# -- effects ------------------------------------------------------------------
def _write_in_place(path: Path, text: str) -> None:
    # Same inode on rewrite: a bind mount of the old file would not see a rename.
    if path.exists() and path.read_text() == text:
        return
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def write_pod_files(
    pod_dir: Path,
    *,
    hostname: str,
    pod_ip: str,
    namespace: str,
    cluster_domain: str = "cluster.local",
    dns_server: str = "10.96.0.10",
    dns_policy: str = "ClusterFirst",
    host_aliases: Iterable[Mapping[str, Any]] = (),
    upstream_resolv: Path = Path("/etc/resolv.conf"),
    dns_config: Mapping[str, Any] | None = None,
    subdomain: str = "",
) -> dict[str, Path]:
    """Write the pod's etc files under ``pod_dir``; returns ``{container path: host path}``."""
    pod_dir = Path(pod_dir)
    pod_dir.mkdir(parents=True, exist_ok=True)
    try:
        host = parse_resolv_conf(Path(upstream_resolv).read_text())
    except FileNotFoundError:
        host = DNSConfig()
    fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}" if subdomain else ""
    files = {
        "/etc/hosts": (
            pod_dir / "etc-hosts",
            render_hosts(hostname=hostname, pod_ip=pod_ip, host_aliases=host_aliases, fqdn=fqdn),
        ),
        "/etc/resolv.conf": (
            pod_dir / "resolv.conf",
            render_resolv_conf(
                resolve_dns(
                    namespace=namespace,
                    dns_policy=dns_policy,
                    cluster_domain=cluster_domain,
                    dns_server=dns_server,
                    host=host,
                    dns_config=dns_config,
                )
            ),
        ),
        "/etc/hostname": (pod_dir / "hostname", hostname + "\n"),
    }
    for path, text in files.values():
        _write_in_place(path, text)
    return {container: path for container, (path, _) in files.items()}
