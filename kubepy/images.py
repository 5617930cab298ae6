"""Small OCI image archives built from local files, for machines without a registry.

``umoci`` does the image work (layout, layer, config); ``tar`` packs the
layout. The archive's index names the image twice: ``org.opencontainers.
image.ref.name`` (the tag, as OCI says) and ``io.containerd.image.name`` (the
full normalised reference), which ``ctr images import`` uses as the image's
name - so ``busybox:1.36`` is imported as ``docker.io/library/busybox:1.36``,
the name a pod's ``image: busybox:1.36`` resolves to.

The example applications' images (``examples/``) are built here too, from
the distribution's packages, with no registry::

    python -m kubepy.images --examples OUT_DIR

- ``kubepy.local/redis:7``: Debian's ``redis-server`` (``apt-get download``
  of redis-server, redis-tools, libjemalloc2 and liblzf1, unpacked with
  ``dpkg-deb -x``), the shared libraries its binaries
  need (found with ``ldd``, the ELF interpreter included, copied to the same
  paths) and busybox for a shell; runs ``redis-server /etc/redis/redis.conf``
  (``--protected-mode no --save "" --appendonly no``, port 6379).
- ``kubepy.local/web:1`` / ``:2``: busybox ``httpd`` on 8080 with a CGI
  script that counts visits in Redis over ``nc`` and the Redis protocol.
- ``kubepy.local/job:1``: a shell loop printing the first 20 primes.
- ``kubepy.local/pyclient:1``: Debian's Python 3.11 with the official
  Kubernetes client (``python3-kubernetes`` and the packages it imports),
  the libraries they load (``ldd``) and busybox; runs ``/app/incluster.py``,
  which lists pods through in-cluster config (see ``INCLUSTER_PY``).
- ``kubepy.local/kopf:1``: the pyclient image plus Kopf (the operator
  framework) and its dependencies, ``pip install --target`` from PyPI for the
  image's Python; runs ``kopf run`` with the pod's args.
- ``kubepy.local/hello:1``: busybox ``httpd`` serving a static page on 80.

Downloaded ``.deb`` files are kept in a cache directory (``--deb-cache``,
default ``$XDG_CACHE_HOME/kubepy/debs``) so rebuilds need no network; so is the
``pip install --target`` tree (``$XDG_CACHE_HOME/kubepy/pip/<key of the requirements>``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BUSYBOX_APPLETS", "EXAMPLE_IMAGES", "ImageBuildError", "build_examples", "build_image",
           "busybox_image", "hello_image", "job_image", "kopf_image", "pip_target", "pyclient_image",
           "redis_image", "udp_echo_image", "web_image"]

BUSYBOX = "/bin/busybox"   # Debian's busybox-static
BUSYBOX_APPLETS = ["sh", "ash", "sleep", "echo", "cat", "ls", "ps", "wget", "nc", "httpd", "ip",
                   "ifconfig", "hostname", "env", "id", "true", "false", "test", "mkdir", "rm",
                   "touch", "grep", "head", "tail", "dd", "date", "kill", "mount", "df", "uname",
                   "nslookup", "ping", "printf", "seq", "sed", "awk", "wc", "tee", "sort", "vi",
                   "top", "free", "yes", "timeout", "nohup", "nproc", "pwd", "whoami", "route"]
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageBuildError(Exception):
    pass


def build_image(ref: str, out_tar: Path, *, files: dict[str, Path] | None = None,
                symlinks: dict[str, str] | None = None, entrypoint: list[str] | None = None,
                cmd: list[str] | None = None, env: dict[str, str] | None = None,
                workdir: str | None = None, user: str | None = None) -> Path:
    """Build a one-layer image holding ``files`` (path in image → host file) and write
    an OCI archive that ``ctr images import`` names ``ref`` (normalised)."""
    from kubepy.kubelet.runtime import normalize_image_ref
    if "" in (entrypoint or []) or "" in (cmd or []):
        raise ImageBuildError("umoci config drops empty arguments; put such settings in a file")
    full = normalize_image_ref(ref)
    tag = full.rsplit(":", 1)[-1] if "@" not in full else "latest"
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", tag)
    with tempfile.TemporaryDirectory(prefix="kubepy-image-") as tmp:
        layout, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
        image = f"{layout}:{tag}"
        _run("umoci", "init", "--layout", str(layout))
        _run("umoci", "new", "--image", image)
        _run("umoci", "unpack", "--image", image, str(bundle))
        rootfs = bundle / "rootfs"
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
            (rootfs / d).mkdir(exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        for dest, src in (files or {}).items():
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        for dest, link_to in (symlinks or {}).items():
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            target.symlink_to(link_to)
        _run("umoci", "repack", "--image", image, str(bundle))
        config = ["umoci", "config", "--image", image]
        for arg in entrypoint or []:
            config += ["--config.entrypoint", arg]
        for arg in cmd or []:
            config += ["--config.cmd", arg]
        for k, v in (env or {}).items():
            config += ["--config.env", f"{k}={v}"]
        if workdir:
            config += ["--config.workingdir", workdir]
        if user:
            config += ["--config.user", user]
        _run(*config)
        _run("umoci", "gc", "--layout", str(layout))
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for m in index["manifests"]:
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
                m["annotations"]["io.containerd.image.name"] = full
        index_path.write_text(json.dumps(index))
        out_tar = Path(out_tar)
        out_tar.parent.mkdir(parents=True, exist_ok=True)
        _run("tar", "-C", str(layout), "-cf", str(out_tar), ".")
    return out_tar


def busybox_image(ref: str, out_tar: Path, *, applets: list[str] | None = None) -> Path:
    """A busybox image: /bin/busybox (static) with applet symlinks, /etc/passwd, PATH=/bin."""
    with tempfile.TemporaryDirectory(prefix="kubepy-busybox-") as tmp:
        passwd, group = Path(tmp) / "passwd", Path(tmp) / "group"
        passwd.write_text(PASSWD)
        group.write_text(GROUP)
        return build_image(
            ref, out_tar,
            files={"/bin/busybox": Path(BUSYBOX), "/etc/passwd": passwd, "/etc/group": group},
            symlinks={f"/bin/{a}": "busybox" for a in (applets or BUSYBOX_APPLETS)},
            cmd=["sh"], env={"PATH": "/bin"}, workdir="/")


UDPECHO_REF = "kubepy.local/udpecho:1"
UDPECHO_SRC = Path(__file__).parent / "images_src" / "udpecho.c"
UDPECHO_PORT = 9000


def udp_echo_image(ref: str = UDPECHO_REF, out_tar: Path | None = None, *, cc: str = "gcc") -> Path:
    """A UDP echo server (``images_src/udpecho.c``, compiled static here) plus busybox for ``kubectl exec``.

    ``/bin/udpecho 9000`` answers every datagram with ``"<hostname> <payload>"`` and exits 0 on
    SIGTERM. Needs a C compiler and a static libc (Debian: gcc, libc6-dev)."""
    if out_tar is None:
        raise ImageBuildError("udp_echo_image needs out_tar")
    with tempfile.TemporaryDirectory(prefix="kubepy-udpecho-") as tmp_:
        tmp = Path(tmp_)
        binary = tmp / "udpecho"
        _run(cc, "-static", "-O2", "-o", str(binary), str(UDPECHO_SRC))
        files, symlinks = _busybox_base(tmp)
        files["/bin/udpecho"] = binary
        return build_image(ref, out_tar, files=files, symlinks=symlinks,
                           entrypoint=["/bin/udpecho", str(UDPECHO_PORT)], env={"PATH": "/bin"}, workdir="/")


NETSERVE_REF = "kubepy.local/netserve:1"
NETSERVE_SRC = Path(__file__).parent / "images_src" / "netserve.c"


def netserve_image(ref: str = NETSERVE_REF, out_tar: Path | None = None, *, cc: str = "gcc") -> Path:
    """A server answering its hostname on TCP, UDP (and SCTP when the kernel has it) ports
    (``images_src/netserve.c``, compiled static here) plus busybox: the network-policy truth table's pods.

    ``/bin/netserve 80 81`` serves ports 80 and 81 on every protocol. Needs gcc and a static libc."""
    if out_tar is None:
        raise ImageBuildError("netserve_image needs out_tar")
    with tempfile.TemporaryDirectory(prefix="kubepy-netserve-") as tmp_:
        tmp = Path(tmp_)
        binary = tmp / "netserve"
        _run(cc, "-static", "-O2", "-o", str(binary), str(NETSERVE_SRC))
        files, symlinks = _busybox_base(tmp)
        files["/bin/netserve"] = binary
        return build_image(ref, out_tar, files=files, symlinks=symlinks,
                           entrypoint=["/bin/netserve", "80", "81"], env={"PATH": "/bin"}, workdir="/")


def _run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, check=False, cwd=cwd, env=env)
    except FileNotFoundError as e:
        raise ImageBuildError(f"{argv[0]} is not installed: {e}") from None
    if res.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited with {res.returncode}: "
                              f"{res.stderr.decode(errors='replace').strip()}")
    return res.stdout.decode(errors="replace")


# -- the example applications' images (examples/) -----------------------------

REDIS_REF, WEB_REFS, JOB_REF = "kubepy.local/redis:7", ("kubepy.local/web:1", "kubepy.local/web:2"), "kubepy.local/job:1"
PYCLIENT_REF = "kubepy.local/pyclient:1"
EXAMPLE_IMAGES = (REDIS_REF, *WEB_REFS, JOB_REF)
# Built on request (--only), not by default: examples/ does not use it and it is the largest.
OPTIONAL_IMAGES = (PYCLIENT_REF, "kubepy.local/kopf:1", "kubepy.local/hello:1")

# redis-server's binary is in redis-tools (redis-server is a symlink to it);
# libjemalloc2 and liblzf1 are installed on few hosts, so they come as packages
# too. Every other library (libc, libssl, libsystemd, ...) is the host's own,
# from its Debian packages of the same release.
REDIS_PACKAGES = ("redis-server", "redis-tools", "libjemalloc2", "liblzf1")
REDIS_FILES = ("/usr/bin/redis-check-rdb", "/usr/bin/redis-cli")
REDIS_SYMLINKS = {"/usr/bin/redis-server": "redis-check-rdb"}
# The settings the image runs with. They are in a file rather than on the
# command line because `umoci config` drops empty arguments (`--save ""`).
# A pod's `args:` add to them: `args: ["--maxmemory", "64mb"]`.
REDIS_CONF = """# kubepy example: an in-memory Redis for other pods (no persistence).
# The command-line equivalent: redis-server --protected-mode no --save "" --appendonly no
bind * -::*
port 6379
protected-mode no
save ""
appendonly no
"""
REDIS_ENTRYPOINT = ["redis-server", "/etc/redis/redis.conf"]

# PID 1 of a container ignores SIGTERM unless it handles it; busybox httpd does
# not, so a small shell stays PID 1 and turns TERM into a quick, clean exit.
WEB_ENTRYPOINT = """#!/bin/sh
# kubepy example web tier: busybox httpd on :8080, / is a CGI counting visits in Redis.
httpd -f -vv -p "${PORT:-8080}" -h /www &
pid=$!
trap 'kill $pid; wait $pid; exit 0' TERM INT
wait $pid
"""

# Redis speaks RESP: "INCR visits" answers ":<n>"; QUIT makes the server close
# the connection after answering, so nc ends by itself.
WEB_CGI = """#!/bin/sh
# GET / : count this visit in Redis (found by its DNS name) and say who answered.
host="${REDIS_HOST:-redis}"
# Not $REDIS_PORT: for a Service named redis the kubelet sets it to tcp://<ip>:6379, as Kubernetes does.
port="${REDIS_SERVICE_PORT:-6379}"
me="$(hostname)"
reply="$(printf 'INCR visits\\r\\nQUIT\\r\\n' | timeout 3 nc -w 2 "$host" "$port" 2>&1)"
n="$(printf '%s\\n' "$reply" | sed -n 's/^:\\([0-9][0-9]*\\).*/\\1/p' | head -n 1)"
if [ -n "$n" ]; then
    printf 'Content-Type: text/plain\\r\\n\\r\\n'
    echo "hello from web v@VERSION@ on $me, visits: $n"
else
    printf 'Status: 503 Service Unavailable\\r\\nContent-Type: text/plain\\r\\n\\r\\n'
    echo "hello from web v@VERSION@ on $me, but redis at $host:$port did not answer"
fi
"""

JOB_SCRIPT = """#!/bin/sh
# kubepy example one-shot job: print the first $COUNT (default 20) primes, then exit 0.
count="${COUNT:-20}"
found=0
n=2
primes=""
while [ "$found" -lt "$count" ]; do
    d=2
    prime=1
    while [ $((d * d)) -le "$n" ]; do
        if [ $((n % d)) -eq 0 ]; then prime=0; break; fi
        d=$((d + 1))
    done
    if [ "$prime" -eq 1 ]; then primes="$primes $n"; found=$((found + 1)); fi
    n=$((n + 1))
done
echo "the first $count primes:$primes"
"""


def default_deb_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubepy" / "debs"


def download_debs(packages: tuple[str, ...] | list[str], cache_dir: Path | None = None) -> list[Path]:
    """The candidate version of each Debian package, as a ``.deb`` file.

    ``apt-get download`` fetches what ``apt-cache`` names as the candidate
    (the host's apt sources and pinning decide). Files are kept in
    ``cache_dir`` under their pool name (``name_version_arch.deb``), so a
    second build of the same versions needs no network.
    """
    cache_dir = Path(cache_dir or default_deb_cache())
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        shown = _run("apt-cache", "show", "--no-all-versions", *packages)
    except ImageBuildError as e:
        raise ImageBuildError(f"apt does not know all of {', '.join(packages)} (run apt-get update?): {e}") from None
    pool: dict[str, str] = {}
    for stanza in shown.split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line[0].isspace())
        if "Package" in fields and "Filename" in fields:
            pool.setdefault(fields["Package"].strip(), fields["Filename"].strip())
    wanted: dict[str, Path] = {}
    for pkg in packages:
        filename = pool.get(pkg)
        if not filename:
            raise ImageBuildError(f"apt-cache show {pkg} names no Filename (run apt-get update?)")
        wanted[pkg] = cache_dir / Path(filename).name
    missing = [pkg for pkg, path in wanted.items() if not path.exists()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="kubepy-deb-", dir=cache_dir) as tmp:
            _run("apt-get", "download", "-q", *missing, cwd=Path(tmp))
            for pkg in missing:
                [got] = Path(tmp).glob(f"{pkg}_*.deb")
                got.rename(wanted[pkg])
    return [wanted[pkg] for pkg in packages]


def library_closure(binaries: list[Path], staged_root: Path) -> dict[str, Path]:
    """Image path → file for every shared object ``binaries`` load, interpreter included.

    ``ldd`` resolves them, with the staged packages' library directories first
    on ``LD_LIBRARY_PATH``: a library found there keeps its path under
    ``staged_root``; one found on the host keeps its host path (the content
    is the symlink's target, the name is the one the loader asks for).
    """
    staged_root = staged_root.resolve()
    lib_dirs = sorted({str(p.parent) for p in staged_root.rglob("*.so*") if p.is_file() or p.is_symlink()})
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(lib_dirs))
    found: dict[str, Path] = {}
    for binary in binaries:
        for line in _run("ldd", str(binary), env=env).splitlines():
            line = line.strip()
            if "not found" in line:
                raise ImageBuildError(f"{binary.name} needs a library nobody provides: {line}")
            path = line.split("=>", 1)[1] if "=>" in line else line
            path = path.split(" (", 1)[0].strip()
            if not path.startswith("/"):
                continue                                   # linux-vdso.so.1: the kernel's
            p = Path(path)
            in_image = "/" + str(p.relative_to(staged_root)) if p.is_relative_to(staged_root) else path
            found[in_image] = p.resolve()
    return found


def _busybox_base(tmp: Path, applets: list[str] | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    passwd, group = tmp / "passwd", tmp / "group"
    passwd.write_text(PASSWD)
    group.write_text(GROUP)
    files = {"/bin/busybox": Path(BUSYBOX), "/etc/passwd": passwd, "/etc/group": group}
    return files, {f"/bin/{a}": "busybox" for a in (applets or BUSYBOX_APPLETS)}


def _script(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def redis_image(ref: str, out_tar: Path, *, deb_cache: Path | None = None) -> Path:
    """Debian's redis-server + the libraries it loads + busybox; listens on 6379, keeps no data."""
    with tempfile.TemporaryDirectory(prefix="kubepy-redis-") as tmp_:
        tmp = Path(tmp_)
        staged = tmp / "debs"
        for deb in download_debs(REDIS_PACKAGES, deb_cache):
            _run("dpkg-deb", "-x", str(deb), str(staged))
        files, symlinks = _busybox_base(tmp)
        binaries = [staged / f.lstrip("/") for f in REDIS_FILES]
        for dest, src in zip(REDIS_FILES, binaries):
            files[dest] = src
        files.update(library_closure(binaries, staged))
        files["/etc/redis/redis.conf"] = _script(tmp, "redis.conf", REDIS_CONF)
        (tmp / "redis.conf").chmod(0o644)
        files["/usr/share/doc/redis-server/copyright"] = staged / "usr/share/doc/redis-server/copyright"
        symlinks.update(REDIS_SYMLINKS)
        return build_image(ref, out_tar, files=files, symlinks=symlinks, entrypoint=REDIS_ENTRYPOINT,
                           env={"PATH": "/usr/bin:/bin"}, workdir="/tmp")


def web_image(ref: str, out_tar: Path, *, version: str) -> Path:
    """busybox httpd on 8080: ``/`` counts visits in Redis ($REDIS_HOST, default ``redis``), ``/healthz`` is static."""
    with tempfile.TemporaryDirectory(prefix="kubepy-web-") as tmp_:
        tmp = Path(tmp_)
        files, symlinks = _busybox_base(tmp)
        files["/bin/web"] = _script(tmp, "web", WEB_ENTRYPOINT)
        files["/www/cgi-bin/index.cgi"] = _script(tmp, "index.cgi", WEB_CGI.replace("@VERSION@", version))
        files["/www/healthz"] = _script(tmp, "healthz", "ok\n")
        (tmp / "healthz").chmod(0o644)
        return build_image(ref, out_tar, files=files, symlinks=symlinks, entrypoint=["/bin/web"],
                           env={"PATH": "/bin", "REDIS_HOST": "redis", "WEB_VERSION": version}, workdir="/www")


def job_image(ref: str, out_tar: Path) -> Path:
    """A one-shot: prints the first 20 primes (``COUNT`` changes how many) and exits 0."""
    with tempfile.TemporaryDirectory(prefix="kubepy-job-") as tmp_:
        tmp = Path(tmp_)
        files, symlinks = _busybox_base(tmp)
        files["/bin/primes"] = _script(tmp, "primes", JOB_SCRIPT)
        return build_image(ref, out_tar, files=files, symlinks=symlinks, entrypoint=["/bin/primes"],
                           env={"PATH": "/bin"}, workdir="/")


# -- Python with the official Kubernetes client ----------------------------------

# The packages whose files the client loads: python3-kubernetes' dependencies
# (apt-cache depends --recurse) less those it never imports on the way to a
# request - measured with sys.modules after load_incluster_config() and a
# list call: python3-cryptography, -cffi-backend, -jwt (oauthlib's optional
# signing), -rsa, -pyasn1, -pyasn1-modules, -cachetools (google-auth's, only
# for GCP credentials) and -setuptools/-pkg-resources. python3-chardet stays:
# Debian's requests warns at import without it. libyaml-0-2 comes as a package
# for PyYAML's C loader; every other library (libc, libssl, libffi, zlib, ...)
# is the host's own, from the same Debian release.
PYCLIENT_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libyaml-0-2",
    "python3-kubernetes", "python3-certifi", "python3-dateutil", "python3-google-auth",
    "python3-requests", "python3-requests-oauthlib", "python3-oauthlib", "python3-blinker",
    "python3-six", "python3-urllib3", "python3-websocket", "python3-yaml", "python3-idna",
    "python3-charset-normalizer", "python3-chardet")
PYTHON = "/usr/bin/python3.11"
PYTHON_STDLIB, PYTHON_SITE = "/usr/lib/python3.11", "/usr/lib/python3/dist-packages"
# The stdlib's C modules the client imports (the same measurement), plus a few that
# a small program commonly does (asyncio, uuid, zoneinfo, select/mmap helpers). Kopf and
# aiohttp (the kopf image) import no others (measured likewise).
PYCLIENT_DYNLOAD = ("_bz2", "_decimal", "_hashlib", "_json", "_lzma", "_multibytecodec", "_multiprocessing",
                    "_queue", "_ssl", "_typing", "_asyncio", "_contextvars", "_uuid", "_zoneinfo", "mmap",
                    "resource", "termios", "_posixshmem")
# Not in the image: the stdlib's own tests and anything of a package's tests.
_PYCLIENT_SKIP = re.compile(r"^/usr/lib/python3\.11/test/|_test\.py$|/tests?/|/__pycache__/")

INCLUSTER_PY = '''"""List pods through the official Kubernetes client's in-cluster config (kubepy's pyclient image).

    python3 /app/incluster.py [NAMESPACE ...]

Reads the pod's own namespace from its service-account volume, lists the pods
there and then in each NAMESPACE given, and prints one line per outcome:

    pods in NS: a,b          (names sorted; nothing after the colon when there are none)
    forbidden in NS: 403
    error in NS: STATUS REASON

Exits 0 when every line was printed, whatever the answers were.
"""

import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException

NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def outcome(api: client.CoreV1Api, namespace: str) -> str:
    try:
        pods = api.list_namespaced_pod(namespace)
    except ApiException as e:
        if e.status == 403:
            return f"forbidden in {namespace}: {e.status}"
        return f"error in {namespace}: {e.status} {e.reason}"
    return f"pods in {namespace}: " + ",".join(sorted(p.metadata.name for p in pods.items))


def main(argv: list[str]) -> int:
    config.load_incluster_config()
    with open(NAMESPACE_FILE) as f:
        own = f.read().strip()
    api = client.CoreV1Api()
    for namespace in [own, *argv[1:]]:
        print(outcome(api, namespace), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def _tree_files(staged: Path, under: str) -> tuple[dict[str, Path], dict[str, str]]:
    """Files and symlinks below ``under`` as image path → source / link target.

    A link that leads nowhere in the staged packages (Debian points sitecustomize.py
    and certifi's bundle at /etc) is left out rather than shipped dangling."""
    files: dict[str, Path] = {}
    links: dict[str, str] = {}
    for p in sorted((staged / under.lstrip("/")).rglob("*")):
        dest = "/" + str(p.relative_to(staged))
        if p.is_symlink():
            target = os.readlink(p)
            inside = (staged / target.lstrip("/")) if target.startswith("/") else p.parent / target
            if inside.exists():
                links[dest] = target
        elif p.is_file():
            files[dest] = p
    return files, links


def _python_tree(tmp: Path, deb_cache: Path | None, *,
                 site: Path | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """The pyclient image's files: Debian's python3.11 + python3-kubernetes + busybox.

    ``site`` (a ``pip install --target`` tree) goes to ``PYTHON_LOCAL_SITE``, which Debian's
    interpreter puts on ``sys.path`` before its own packages; its extensions' libraries are
    found like the interpreter's. Everything is compiled to ``__pycache__`` with the image's
    own interpreter (unchecked-hash pycs), so a pod does not compile hundreds of modules on start."""
    staged = tmp / "debs"
    for deb in download_debs(PYCLIENT_PACKAGES, deb_cache):
        _run("dpkg-deb", "-x", str(deb), str(staged))
    if site is not None:
        shutil.copytree(site, staged / PYTHON_LOCAL_SITE.lstrip("/"), symlinks=True)
    trees = (PYTHON_STDLIB, PYTHON_SITE) + ((PYTHON_LOCAL_SITE,) if site is not None else ())
    lib_dynload = staged / PYTHON_STDLIB.lstrip("/") / "lib-dynload"
    for so in lib_dynload.glob("*.so"):
        if so.name.split(".", 1)[0] not in PYCLIENT_DYNLOAD:
            so.unlink()
    python = staged / PYTHON.lstrip("/")
    extensions = [p for p in staged.rglob("*.so") if p.is_file() and not p.name.startswith("lib")]
    libraries = library_closure([python, *extensions], staged)
    for under in trees:
        for path in list((staged / under.lstrip("/")).rglob("*")):
            if _PYCLIENT_SKIP.search("/" + str(path.relative_to(staged))) and path.is_file():
                path.unlink()
    # The image's interpreter compiles its own tree: same magic number, paths as in the image.
    env = dict(os.environ, PYTHONHOME=str(staged / "usr"), LD_LIBRARY_PATH=":".join(
        sorted({str(p.parent) for p in libraries.values()})))
    env.pop("PYTHONPATH", None)
    _run(str(python), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         "-s", str(staged), "-p", "/", *(str(staged / t.lstrip("/")) for t in trees), env=env)
    files, symlinks = _busybox_base(tmp)
    files[PYTHON] = python
    for under in trees:
        tree, links = _tree_files(staged, under)
        files.update(tree)
        symlinks.update(links)
    files.update(libraries)
    for pkg in PYCLIENT_PACKAGES:
        copyright_file = staged / "usr/share/doc" / pkg / "copyright"
        if copyright_file.exists():
            files[f"/usr/share/doc/{pkg}/copyright"] = copyright_file
    symlinks["/usr/bin/python3"] = "python3.11"
    return files, symlinks


def pyclient_image(ref: str, out_tar: Path, *, deb_cache: Path | None = None) -> Path:
    """Debian's python3.11 + python3-kubernetes (and what it imports) + busybox; runs /app/incluster.py."""
    with tempfile.TemporaryDirectory(prefix="kubepy-pyclient-") as tmp_:
        tmp = Path(tmp_)
        files, symlinks = _python_tree(tmp, deb_cache)
        files["/app/incluster.py"] = _script(tmp, "incluster.py", INCLUSTER_PY)
        return build_image(ref, out_tar, files=files, symlinks=symlinks,
                           entrypoint=["python3", "/app/incluster.py"],
                           env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}, workdir="/app")


# -- kopf: the pyclient image plus the Kopf operator framework from PyPI ---------------

KOPF_REF = "kubepy.local/kopf:1"
# Pinned: the image is rebuilt when this changes (its pip tree is cached under a key of it).
KOPF_REQUIREMENTS = ("kopf==1.45.2",)
# Wheels for the image's interpreter, not the host's: CPython 3.11 on glibc (Debian 12's 2.36).
PIP_TARGET_PLATFORM = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                       "--only-binary=:all:")
PYTHON_LOCAL_SITE = "/usr/local/lib/python3.11/dist-packages"


def default_pip_cache() -> Path:
    return default_deb_cache().parent / "pip"


def pip_target(requirements: tuple[str, ...], cache_dir: Path | None = None) -> Path:
    """``pip install --target`` of ``requirements`` (and their dependencies) for the image's
    Python, kept in ``cache_dir/<key>`` (the key: the requirements and the target platform),
    so a rebuild needs no network. Returns the tree."""
    import hashlib
    machine = os.uname().machine
    platforms = [f"manylinux_2_{v}_{machine}" for v in (17, 28, 34, 36)] + [f"manylinux2014_{machine}"]
    spec = [*requirements, *PIP_TARGET_PLATFORM, *platforms]
    key = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir or default_pip_cache())
    tree = cache_dir / key
    if tree.is_dir():
        return tree
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubepy-pip-", dir=cache_dir) as tmp:
        partial = Path(tmp) / "site"
        argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
                "--target", str(partial), *PIP_TARGET_PLATFORM]
        for platform in platforms:
            argv += ["--platform", platform]
        _run(*argv, *requirements)
        shutil.rmtree(partial / "bin", ignore_errors=True)   # console scripts with the host's shebang
        partial.rename(tree)
    return tree


KOPF_MAIN = """#!/usr/bin/python3.11
# kopf's console script, for the image's interpreter.
import sys
from kopf.cli import main
sys.exit(main())
"""


def kopf_image(ref: str, out_tar: Path, *, deb_cache: Path | None = None, pip_cache: Path | None = None) -> Path:
    """The pyclient image (Debian's python3.11 + python3-kubernetes + busybox) plus Kopf and its
    dependencies from PyPI (``pip_target``); runs ``kopf run``: give the operator's file and flags as args."""
    site = pip_target(KOPF_REQUIREMENTS, pip_cache)
    with tempfile.TemporaryDirectory(prefix="kubepy-kopf-") as tmp_:
        tmp = Path(tmp_)
        files, symlinks = _python_tree(tmp, deb_cache, site=site)
        files["/usr/local/bin/kopf"] = _script(tmp, "kopf", KOPF_MAIN)
        return build_image(ref, out_tar, files=files, symlinks=symlinks, entrypoint=["kopf", "run"],
                           env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                                "PYTHONUNBUFFERED": "1"}, workdir="/app")


# -- a static web server, for charts whose pods serve HTTP ----------------------------

HELLO_REF = "kubepy.local/hello:1"


def hello_image(ref: str, out_tar: Path, *, port: int = 80) -> Path:
    """busybox ``httpd`` serving a static ``/index.html`` (``hello from <ref>``) on ``port``; exits on TERM."""
    with tempfile.TemporaryDirectory(prefix="kubepy-hello-") as tmp_:
        tmp = Path(tmp_)
        files, symlinks = _busybox_base(tmp)
        files["/bin/web"] = _script(tmp, "web", WEB_ENTRYPOINT)
        index = tmp / "index.html"
        index.write_text(f"hello from {ref}\n")
        files["/www/index.html"] = index
        return build_image(ref, out_tar, files=files, symlinks=symlinks, entrypoint=["/bin/web"],
                           env={"PATH": "/bin", "PORT": str(port)}, workdir="/www")


def archive_name(ref: str) -> str:
    """``kubepy.local/web:1`` → ``web-1.tar``."""
    name, _, tag = ref.rpartition("/")[2].partition(":")
    return f"{name}-{tag or 'latest'}.tar"


def build_examples(out_dir: Path, *, deb_cache: Path | None = None,
                   only: list[str] | None = None) -> dict[str, Path]:
    """Build the images examples/ uses into ``out_dir``; returns ref → archive."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for ref in only or EXAMPLE_IMAGES:
        out = out_dir / archive_name(ref)
        if ref == REDIS_REF:
            built[ref] = redis_image(ref, out, deb_cache=deb_cache)
        elif ref in WEB_REFS:
            built[ref] = web_image(ref, out, version=ref.rsplit(":", 1)[1])
        elif ref == JOB_REF:
            built[ref] = job_image(ref, out)
        elif ref == PYCLIENT_REF:
            built[ref] = pyclient_image(ref, out, deb_cache=deb_cache)
        elif ref == KOPF_REF:
            built[ref] = kopf_image(ref, out, deb_cache=deb_cache)
        elif ref == HELLO_REF:
            built[ref] = hello_image(ref, out)
        else:
            raise ImageBuildError(f"no example image {ref}; known: {', '.join(EXAMPLE_IMAGES + OPTIONAL_IMAGES)}")
    return built


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubepy.images",
                                 description="Build OCI image archives locally (umoci, Debian packages).")
    ap.add_argument("--examples", metavar="OUT_DIR", type=Path,
                    help="build the images examples/ uses into OUT_DIR (one .tar per image)")
    ap.add_argument("--only", metavar="REF", action="append",
                    help=f"build only this example image (repeatable): {', '.join(EXAMPLE_IMAGES + OPTIONAL_IMAGES)}")
    ap.add_argument("--deb-cache", metavar="DIR", type=Path,
                    help="where downloaded .deb files are kept (default $XDG_CACHE_HOME/kubepy/debs)")
    ap.add_argument("--busybox", nargs=2, metavar=("REF", "OUT_TAR"),
                    help="build a plain busybox image named REF into OUT_TAR")
    ap.add_argument("--udpecho", nargs=2, metavar=("REF", "OUT_TAR"),
                    help=f"build the UDP echo test image (e.g. {UDPECHO_REF}) into OUT_TAR (needs gcc, libc6-dev)")
    args = ap.parse_args(argv)
    if not args.examples and not args.busybox and not args.udpecho:
        ap.error("nothing to do: give --examples OUT_DIR, --busybox REF OUT_TAR or --udpecho REF OUT_TAR")
    try:
        if args.busybox:
            print(f"{args.busybox[0]}\t{busybox_image(args.busybox[0], Path(args.busybox[1]))}")
        if args.udpecho:
            print(f"{args.udpecho[0]}\t{udp_echo_image(args.udpecho[0], Path(args.udpecho[1]))}")
        if args.examples:
            for ref in args.only or EXAMPLE_IMAGES:
                t0 = time.monotonic()
                [(_, path)] = build_examples(args.examples, deb_cache=args.deb_cache, only=[ref]).items()
                print(f"{ref}\t{path}\t{path.stat().st_size / 1e6:.1f} MB\t{time.monotonic() - t0:.1f}s")
    except ImageBuildError as e:
        print(f"python -m kubepy.images: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
