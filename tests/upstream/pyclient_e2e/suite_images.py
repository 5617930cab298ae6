"""The images the official client's e2e suite names, built here and served by a local registry.

The suite writes bare names (``busybox``, ``nginx``, ``python``) whose
default pull policy is ``Always`` (an omitted tag is ``latest``), and
``nginx:1.15.4`` (``IfNotPresent``). No public registry is reachable, so,
as kind's "local registry" recipe does, a registry on the lab's bridge
(Debian's ``docker-registry``, plain HTTP, on the host side of the bridge)
holds them under their repository paths, and every node's registry hosts
dir names it as the mirror of ``docker.io`` (and ``k8s.gcr.io``). The kubelets then pull exactly as
the pull policy says, every time it says so.

What each image must do is what the suite does with it:

- ``busybox``: ``sh -c`` loops, exec of ``date``, ``seq``, ``gzip``,
  ``uptime``, ``cat``, ``ls``, ``true``/``false``: the static busybox with
  every applet it has.
- ``nginx`` / ``nginx:1.15.4``: serves nginx's welcome page on port 80
  (``test_portforward_http`` looks for ``<h1>Welcome to nginx!</h1>``):
  busybox ``httpd``, which stops on SIGTERM.
- ``k8s.gcr.io/pause:2.0`` (ReplicationController templates): sleeps.
- ``python``: runs ``python -u /opt/port-server.py`` (sockets, select,
  threads): Debian's python3 as installed on this host (its packages'
  files, no download) with the libraries it loads, and busybox for a shell.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubepy.images import BUSYBOX, GROUP, PASSWD, build_image, library_closure

REGISTRY_PORT = 5000

NGINX_INDEX = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>A stand-in built from busybox httpd for kubepy's tests.</p>
</body>
</html>
"""
# PID 1 in a pid namespace gets no default signal actions: the trap makes SIGTERM stop it at once.
NGINX_ENTRYPOINT = """#!/bin/sh
trap 'kill $pid; exit 0' TERM INT
httpd -f -p 80 -h /usr/share/nginx/html &
pid=$!
wait $pid
"""


def _busybox_files(tmp: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Static busybox with every applet it has, /etc/passwd and /etc/group."""
    (tmp / "passwd").write_text(PASSWD)
    (tmp / "group").write_text(GROUP)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = {"/bin/busybox": Path(BUSYBOX), "/etc/passwd": tmp / "passwd", "/etc/group": tmp / "group"}
    return files, {f"/bin/{a}": "busybox" for a in applets if a != "busybox"}


def busybox_full_image(ref: str, out_tar: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="kp-e2e-busybox-") as tmp:
        files, links = _busybox_files(Path(tmp))
        return build_image(ref, out_tar, files=files, symlinks=links, cmd=["sh"], env={"PATH": "/bin"}, workdir="/")


def nginx_standin_image(ref: str, out_tar: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="kp-e2e-nginx-") as tmp_:
        tmp = Path(tmp_)
        files, links = _busybox_files(tmp)
        (tmp / "index.html").write_text(NGINX_INDEX)
        (tmp / "entrypoint").write_text(NGINX_ENTRYPOINT)
        (tmp / "entrypoint").chmod(0o755)
        files["/usr/share/nginx/html/index.html"] = tmp / "index.html"
        files["/docker-entrypoint.sh"] = tmp / "entrypoint"
        return build_image(ref, out_tar, files=files, symlinks=links, entrypoint=["/docker-entrypoint.sh"],
                           env={"PATH": "/bin"}, workdir="/")


def _host_python() -> tuple[Path, list[str]]:
    """Debian's python3 binary and the packages whose files make it run (minimal + stdlib)."""
    binary = Path("/usr/bin/python3").resolve()          # /usr/bin/python3.11
    version = binary.name                                # python3.11
    return binary, [f"{version}-minimal", f"lib{version}-minimal", f"lib{version}-stdlib"]


def python_image(ref: str, out_tar: Path) -> Path:
    binary, packages = _host_python()
    with tempfile.TemporaryDirectory(prefix="kp-e2e-python-") as tmp_:
        tmp = Path(tmp_)
        files, links = _busybox_files(tmp)
        listed = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True, check=True).stdout
        wanted = [Path(p) for p in listed.splitlines()
                  if p.startswith(("/usr/bin/", "/usr/lib/")) and "/test/" not in p]
        regular = [p for p in wanted if p.is_file() and not p.is_symlink()]
        files.update({str(p): p for p in regular})
        shared = [binary, *(p for p in regular if p.suffix == ".so")]
        files.update(library_closure(shared, tmp))
        links["/usr/local/bin/python"] = str(binary)
        links["/usr/local/bin/python3"] = str(binary)
        return build_image(ref, out_tar, files=files, symlinks=links,
                           cmd=["python3"], env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, workdir="/")


PAUSE_ENTRYPOINT = """#!/bin/sh
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def pause_standin_image(ref: str, out_tar: Path) -> Path:
    """``k8s.gcr.io/pause:2.0`` (the suite's ReplicationController template): sleeps until SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="kp-e2e-pause-") as tmp_:
        tmp = Path(tmp_)
        files, links = _busybox_files(tmp)
        (tmp / "pause").write_text(PAUSE_ENTRYPOINT)
        (tmp / "pause").chmod(0o755)
        files["/pause"] = tmp / "pause"
        return build_image(ref, out_tar, files=files, symlinks=links, entrypoint=["/pause"],
                           env={"PATH": "/bin"}, workdir="/")


# image as the suite names it, normalised -> builder. The registry holds each under its path
# (the name without the registry host), so it can stand in for every host named here.
SUITE_IMAGES = {
    "docker.io/library/busybox:latest": busybox_full_image,
    "docker.io/library/nginx:latest": nginx_standin_image,
    "docker.io/library/nginx:1.15.4": nginx_standin_image,
    "docker.io/library/nginx:1.16.0": nginx_standin_image,   # `helm create`'s chart (appVersion 1.16.0)
    "docker.io/library/python:latest": python_image,
    "k8s.gcr.io/pause:2.0": pause_standin_image,
}
MIRRORED_HOSTS = sorted({ref.split("/", 1)[0] for ref in SUITE_IMAGES})


@dataclass
class Registry:
    """A ``docker-registry`` on ``address`` serving the suite's images as docker.io's mirror."""
    proc: subprocess.Popen
    address: str
    tmp: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_hosts(self, hosts_dir: Path) -> None:
        """containerd's ``<host>/hosts.toml`` for every mirrored host: this registry (plain HTTP)
        is tried first; the real one stays the ``server`` (unreachable here)."""
        for host in MIRRORED_HOSTS:
            server = "https://registry-1.docker.io" if host == "docker.io" else f"https://{host}"
            path = hosts_dir / host / "hosts.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f'server = "{server}"\n\n'
                            f'[host."http://{self.address}"]\n  capabilities = ["pull", "resolve"]\n')


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_registry(host: str) -> Registry:
    """Start a registry on ``host``:5000 (an address the nodes reach) and push the suite's images."""
    for tool in ("docker-registry", "skopeo", "dpkg", "umoci"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (.ci/install installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="kp-e2e-registry-", dir="/tmp"))
    address = f"{host}:{REGISTRY_PORT}"
    (tmp / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n"
        f"http:\n  addr: {address}\n")
    with open(tmp / "registry.log", "ab") as logf:
        proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")],
                                stdout=logf, stderr=subprocess.STDOUT)
    reg = Registry(proc, address, tmp)
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"http://{address}/v2/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"registry never answered:\n{(tmp / 'registry.log').read_text()}")
            time.sleep(0.2)
        for ref, build in SUITE_IMAGES.items():
            path = ref.split("/", 1)[1]
            archive = build(ref, tmp / (path.replace("/", "_").replace(":", "_") + ".tar"))
            push = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}",
                                   f"docker://{address}/{path}"], capture_output=True, text=True, timeout=300)
            if push.returncode:
                raise RuntimeError(f"skopeo push of {path} failed: {push.stderr}")
            archive.unlink()
    except BaseException:
        reg.stop()
        raise
    return reg


if __name__ == "__main__":   # build one image archive by hand: python -m ... REF OUT.tar
    SUITE_IMAGES[sys.argv[1]](sys.argv[1], Path(sys.argv[2]))
