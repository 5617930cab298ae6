"""Real Vagrant VMs for the tests: libvirtd in a network namespace of our own.

This machine has no systemd as PID 1 and no usable KVM (see
shared/VAGRANT-NOTES.md), so the tests start ``virtlogd`` and ``libvirtd``
themselves, inside a network namespace they create: libvirt's bridges, the
VMs' networks and every address on them exist only there, and ``vagrant``
and ``kubectl`` run there too to reach the VMs. Everything the tests make
carries one prefix (``kptest-vg-<hex>``): the namespace, the libvirt storage
pool, networks and domains; ``stop()`` removes all of it, also after a
failure.

The VMs run under software emulation (libvirt driver ``qemu``, CPU model
qemu64) from a box that ``vagrant/build-box`` makes; the box is cached
(keyed by build-box's content) in ``KUBEPY_VAGRANT_CACHE`` (default
``/var/tmp/kubepy-vagrant-cache``) because building it takes minutes.

Run by hand to look around (``python -m tests.vagrant_vms --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KUBEPY_VAGRANT_CACHE", "/var/tmp/kubepy-vagrant-cache"))
BOX_NAME = "kubepy/debian12"
LIBVIRT_URI = "qemu:///system"
# Commands the VM tests need, with the Debian packages that provide them (.ci/install installs them).
NEEDS = {
    "vagrant": "vagrant", "libvirtd": "libvirt-daemon-system", "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap", "dnsmasq": "dnsmasq-base", "sfdisk": "fdisk", "rsync": "rsync",
}


def missing_commands() -> list[str]:
    return [f"{cmd} ({pkg})" for cmd, pkg in NEEDS.items() if shutil.which(cmd) is None]


def log(msg: str) -> None:
    print(f"[vagrant-vms {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_box_key() -> str:
    return hashlib.sha256((ROOT / "vagrant" / "build-box").read_bytes()).hexdigest()[:16]


def cached_box() -> tuple[Path, float | None]:
    """The box file, built by vagrant/build-box unless a build of the same script is cached.

    Returns (path, seconds the build took or None when it came from the cache)."""
    override = os.environ.get("KUBEPY_TEST_BOX")
    if override:
        return Path(override), None
    CACHE.mkdir(parents=True, exist_ok=True)
    box = CACHE / f"kubepy-debian12-{build_box_key()}.box"
    if box.exists():
        return box, None
    out = CACHE / "build"
    shutil.rmtree(out, ignore_errors=True)
    log(f"building the box with vagrant/build-box into {out}")
    start = time.monotonic()
    subprocess.run([str(ROOT / "vagrant" / "build-box"), "--out", str(out)], check=True,
                   stdout=sys.stderr, stderr=sys.stderr)
    elapsed = time.monotonic() - start
    (out / "kubepy-debian12.box").rename(box)
    shutil.rmtree(out, ignore_errors=True)
    for old in CACHE.glob("kubepy-debian12-*.box"):
        if old != box:
            old.unlink()
    return box, elapsed


@dataclass
class VagrantVMs:
    """libvirtd in a private network namespace, and a project copy to run `vagrant` in."""

    workdir: Path
    prefix: str = field(default_factory=lambda: f"kptest-vg-{secrets.token_hex(3)}")
    workers: int = 2
    controlplanes: int = 1
    cpus: int = 2
    memory: int = 2048
    subnet: str = "192.168.56"
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.prefix

    @property
    def project(self) -> Path:
        return self.workdir / "project"

    @property
    def pool(self) -> str:
        return f"{self.prefix}-pool"

    @property
    def networks(self) -> list[str]:
        return [f"{self.prefix}-private", f"{self.prefix}-mgmt"]

    @property
    def kubeconfig(self) -> Path:
        return self.project / ".kube" / "admin.kubeconfig"

    def addresses(self) -> dict[str, str]:
        """Every machine's private address, as the Vagrantfile gives them (control planes first)."""
        names = (["controlplane"] + [f"controlplane{j}" for j in range(2, self.controlplanes + 1)]
                 + [f"worker{i}" for i in range(1, self.workers + 1)])
        return {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(names)}

    @property
    def api_vip(self) -> str:
        """The API's virtual address with several control planes (the Vagrantfile's default)."""
        return f"{self.subnet}.100"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VAGRANT_HOME": str(self.workdir / "vagrant.d"),
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
            "KUBEPY_BOX": BOX_NAME,
            "KUBEPY_WORKERS": str(self.workers),
            "KUBEPY_CONTROLPLANES": str(self.controlplanes),
            "KUBEPY_CPUS": str(self.cpus),
            "KUBEPY_MEMORY": str(self.memory),
            "KUBEPY_SUBNET": self.subnet,
            "KUBEPY_INSTALL": "offline",
            "KUBEPY_SYNCED_FOLDER": "rsync",
            "KUBEPY_LIBVIRT_DRIVER": "qemu",
            "KUBEPY_LIBVIRT_URI": LIBVIRT_URI,
            "KUBEPY_LIBVIRT_POOL": self.pool,
            "KUBEPY_LIBVIRT_PREFIX": f"{self.prefix}-",
            "KUBEPY_LIBVIRT_NETWORK": self.networks[0],
            "KUBEPY_LIBVIRT_MGMT_NETWORK": self.networks[1],
            "KUBEPY_LIBVIRT_MGMT_ADDRESS": "192.168.121.0/24",
        })
        return env

    # -- running things in the namespace -----------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float | None = None, capture: bool = True,
            cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the network namespace (with the project's env), from the project copy."""
        cmd = ["ip", "netns", "exec", self.netns, *argv]
        proc = subprocess.run(cmd, cwd=cwd or self.project, env=self.env(), timeout=timeout, text=True, input=input,
                              stdout=subprocess.PIPE if capture else sys.stderr,
                              stderr=subprocess.PIPE if capture else sys.stderr)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}\n"
                               f"stdout: {(proc.stdout or '')[-3000:]}\nstderr: {(proc.stderr or '')[-3000:]}")
        return proc

    def vagrant_in_background(self, *args: str) -> subprocess.Popen:
        """``vagrant ARGS`` started and not waited for (its output goes where ``vagrant`` sends it)."""
        log(f"vagrant {' '.join(args)} (in the background)")
        return subprocess.Popen(["ip", "netns", "exec", self.netns, "vagrant", *args], cwd=self.project,
                                env=self.env(), stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL)

    def wait_defined(self, machine: str, proc: subprocess.Popen, timeout: float = 1800) -> None:
        """Until libvirt has ``machine``'s domain (so its networks and the box's image in the pool exist,
        which a second `vagrant up` would otherwise race to make); fails if ``proc`` ends first."""
        def defined() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"vagrant exited {proc.returncode} before {machine} was defined")
            return f"{self.prefix}-{machine}" in self._list("list", "--all", "--name")
        _wait(defined, timeout, f"the {machine} domain")

    def vagrant(self, *args: str, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess:
        log(f"vagrant {' '.join(args)}")
        return self.run("vagrant", *args, timeout=timeout, check=check, capture=False)

    def ssh(self, machine: str, command: str, timeout: float = 300, check: bool = True) -> str:
        proc = self.run("vagrant", "ssh", machine, "-c", command, "--", "-o", "LogLevel=ERROR",
                        timeout=timeout, check=check)
        return proc.stdout

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("virsh", "-q", "-c", LIBVIRT_URI, *args, check=check, cwd=self.workdir)

    # -- set-up ------------------------------------------------------------------------------------

    def copy_project(self) -> None:
        """A copy of the checked-in tree, as a user's clone would be (no .vagrant/, .kube/, .venv/)."""
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout.split(b"\0")
        for name in filter(None, files):
            src = ROOT / os.fsdecode(name)
            if not src.is_file():
                continue
            dest = self.project / os.fsdecode(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)

    def start(self) -> None:
        if any(_comm(p) == "libvirtd" for p in Path("/proc").glob("*/comm")):
            raise RuntimeError("a libvirtd already runs on this machine; these tests start their own")
        sweep_stale(keep=self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o711)   # qemu runs as libvirt-qemu and must reach the pool below
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        for daemon in ("virtlogd", "libvirtd"):
            out = open(logs / f"{daemon}.log", "ab")
            # Not daemonized (-d): we keep the PID and stop it ourselves.
            self.started.append(subprocess.Popen(
                ["ip", "netns", "exec", self.netns, daemon], stdout=out, stderr=out,
                stdin=subprocess.DEVNULL, start_new_session=True))
            if daemon == "virtlogd":
                _wait(lambda: Path("/run/libvirt/virtlogd-sock").exists(), 30, "virtlogd's socket")
        _wait(lambda: self.virsh("version", check=False).returncode == 0, 60, "libvirtd to answer")
        pool_dir = self.workdir / "pool"
        pool_dir.mkdir(exist_ok=True)
        pool_dir.chmod(0o711)
        self.virsh("pool-define-as", self.pool, "dir", "--target", str(pool_dir))
        self.virsh("pool-start", self.pool)
        log(f"libvirtd runs in netns {self.netns}; pool {self.pool} at {pool_dir}")

    def add_box(self, box: Path) -> None:
        self.run("vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box), cwd=self.workdir,
                 capture=False, timeout=600)

    # -- tear-down ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove every VM, volume, network, pool and daemon this made; also after a failure."""
        if (self.project / ".vagrant").exists():
            with contextlib.suppress(Exception):
                self.vagrant("destroy", "-f", timeout=600, check=False)
        if self.started:
            for name in self._list("list", "--all", "--name"):
                if name.startswith(self.prefix):
                    self.virsh("destroy", name, check=False)
                    self.virsh("undefine", name, "--remove-all-storage", "--nvram", check=False)
            for name in self._list("net-list", "--all", "--name"):
                if name.startswith(self.prefix):
                    self.virsh("net-destroy", name, check=False)
                    self.virsh("net-undefine", name, check=False)
            for vol in self._list("vol-list", self.pool):
                self.virsh("vol-delete", "--pool", self.pool, vol.split()[0], check=False)
            self.virsh("pool-destroy", self.pool, check=False)
            self.virsh("pool-undefine", self.pool, check=False)
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.started.clear()
        # Anything still in the namespace (a qemu, a dnsmasq) goes with it.
        pids = subprocess.run(["ip", "netns", "pids", self.netns], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.netns], stderr=subprocess.DEVNULL)
        # libvirt keeps dnsmasq state and a status directory per network; drop what it kept for ours.
        for state_dir in ("/var/lib/libvirt/dnsmasq", "/run/libvirt/network"):
            for leftover in Path(state_dir).glob(f"{self.prefix}*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    def _list(self, *args: str) -> list[str]:
        proc = self.virsh(*args, check=False)
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


# -- what the VM test modules share ------------------------------------------------------------------
PYTHON = sys.executable
KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def wait_for(cond, timeout: float, what: str, interval: float = 3.0):
    """``cond()``'s first truthy result within ``timeout`` s; a kubectl or ssh error is retried."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = cond()
            if result:
                return result
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error}")


class Cluster:
    """kubectl (with the published admin kubeconfig) and node/pod views of a VM cluster."""

    def __init__(self, vms: VagrantVMs):
        self.vms = vms

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:
        return self.vms.run(KUBECTL, "--kubeconfig", str(self.vms.kubeconfig), "--request-timeout=60s", *args,
                            check=check, timeout=timeout, input=input)

    def json(self, *args: str):
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def http_get(self, url: str) -> str:
        """From the host side of the VMs' private network (the test's namespace)."""
        code = ("import sys, urllib.request\n"
                "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())")
        return self.vms.run(PYTHON, "-c", code, url, timeout=30).stdout.strip()

    def nodes_ready(self) -> dict[str, bool]:
        out = {}
        for node in self.json("nodes")["items"]:
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            out[node["metadata"]["name"]] = conds.get("Ready") == "True"
        return out

    def all_ready(self, count: int) -> bool:
        ready = self.nodes_ready()
        return len(ready) == count and all(ready.values())

    def pods(self, selector: str) -> list[dict]:
        return self.json("pods", "-l", selector)["items"]

    def ready_pods(self, selector: str) -> list[dict]:
        return [p for p in self.pods(selector)
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def save_logs(vms: VagrantVMs, *, units: tuple[str, ...] = ()) -> None:
    """Print the nodes, and on every VM its units' states and the daemons' last journal lines
    (``units``: more units whose journals to print, e.g. kubepy-etcd)."""
    try:
        nodes = vms.run(KUBECTL, "--kubeconfig", str(vms.kubeconfig), "--request-timeout=30s", "get", "nodes",
                        "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].reason,"
                        "MESSAGE:.status.conditions[?(@.type=='Ready')].message", check=False, timeout=60)
        print(f"--- nodes ---\n{nodes.stdout}{nodes.stderr}")
        # Who leads, and which nodes have no pod CIDR yet (a kubelet waits for one before it is Ready).
        more = vms.run(KUBECTL, "--kubeconfig", str(vms.kubeconfig), "--request-timeout=30s", "get", "nodes",
                       "-o", "custom-columns=NAME:.metadata.name,PODCIDR:.spec.podCIDR", check=False, timeout=60)
        leases = vms.run(KUBECTL, "--kubeconfig", str(vms.kubeconfig), "--request-timeout=30s", "get", "leases",
                         "-n", "kube-system", "-o", "custom-columns=NAME:.metadata.name,HOLDER:.spec.holderIdentity,"
                         "RENEWED:.spec.renewTime,TRANSITIONS:.spec.leaseTransitions", check=False, timeout=60)
        print(f"--- pod CIDRs ---\n{more.stdout}{more.stderr}--- leases ---\n{leases.stdout}{leases.stderr}")
    except subprocess.TimeoutExpired:
        print("--- nodes: kubectl timed out ---")
    for machine in vms.addresses():
        # The units' states first, then the node daemons' journals apart from the API server's request lines.
        states = vms.ssh(machine, "systemctl --no-pager --all list-units 'kubepy-*' containerd.service; "
                                  "sudo dmesg | grep -iE 'oom|killed process' | tail -5; "
                                  "top -b -n 1 -w 160 | head -20", timeout=120, check=False)
        print(f"--- units and busiest processes of {machine} ---\n{states[-5000:]}")
        for unit in ("kubepy-kubelet", "kubepy-proxy", *units):
            journal = vms.ssh(machine, f"sudo journalctl -u {unit} --no-pager -n 40 -o short-monotonic",
                              timeout=120, check=False)
            print(f"--- journal of {unit} on {machine} ---\n{journal[-4000:]}")
        journal = vms.ssh(machine, "sudo journalctl -u 'kubepy-*' --no-pager -n 60 -o short-monotonic "
                                   "| grep -v ' request method='", timeout=120, check=False)
        print(f"--- journal of {machine} ---\n{journal[-6000:]}")
        # The control plane's decisions (leadership, controllers, the supervisor), without etcd's and the
        # API server's request noise.
        journal = vms.ssh(machine, "sudo journalctl -u kubepy-controlplane --no-pager -o short-monotonic 2>/dev/null "
                                   "| grep -E 'kubepy\\.(controllers|scheduler|controlplane|client\\.leaderelection)' "
                                   "| tail -n 60", timeout=120, check=False)
        if journal.strip():
            print(f"--- control-plane decisions on {machine} ---\n{journal[-8000:]}")


@contextlib.contextmanager
def prepared_vms(request, figures: dict[str, object], *, log_units: tuple[str, ...] = (), **shape):
    """A VM test module's set-up and tear-down around its own bring-up order.

    Yields (VagrantVMs(workdir, **shape), done) once libvirtd runs with the box added, the project
    copied, its wheelhouse and example images built; the module brings the VMs up and calls
    ``done()`` when its cluster is ready. Afterwards, also on failure: the journals if the set-up
    did not finish or a test failed, every VM and libvirt object removed, ``figures`` printed."""
    if os.geteuid() != 0:
        raise RuntimeError("the VM tests need root (network namespaces, libvirtd)")
    missing = missing_commands()
    assert not missing, f"missing commands (bash .ci/install installs them): {', '.join(missing)}"
    workdir = Path(tempfile.mkdtemp(prefix="kptest-vg-", dir="/var/tmp"))
    vms = VagrantVMs(workdir, **shape)
    state = {"up": False}
    try:
        box, built = cached_box()
        figures["box build (s)"] = round(built, 1) if built is not None else "cached"
        vms.copy_project()
        start = time.monotonic()
        subprocess.run([str(vms.project / "vagrant" / "build-wheelhouse"), "--python", PYTHON], check=True,
                       stdout=sys.stderr, stderr=sys.stderr, timeout=900)
        figures["wheelhouse (s)"] = round(time.monotonic() - start, 1)
        start = time.monotonic()
        subprocess.run([PYTHON, "-m", "kubepy.images", "--examples", str(vms.project / "vagrant" / "images")],
                       check=True, stdout=sys.stderr, stderr=sys.stderr, timeout=600)
        figures["example images (s)"] = round(time.monotonic() - start, 1)
        vms.start()
        vms.add_box(box)
        yield vms, lambda: state.update(up=True)
    finally:
        start = time.monotonic()
        # The journals only help when something failed (pytest shows captured output then).
        if vms.started and (not state["up"] or request.session.testsfailed):
            save_logs(vms, units=log_units)
        vms.stop()
        figures["destroy and stop (s)"] = round(time.monotonic() - start, 1)
        print("\nVM cluster figures:\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()), file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


def sweep_stale(keep: Path | None = None) -> None:
    """Remove what a killed earlier run left (its stop() never ran): its domains, networks and pool in
    libvirt's configuration and state, its namespace and its work directory.

    Only called while no libvirtd runs, so nothing with our prefix can be in use. A stale network left
    in /run/libvirt/network is loaded as active by the next libvirtd, and Vagrant then reuses it (same
    address range) under its old name, so `vagrant up` fails with "Network not found".
    """
    patterns = [("/etc/libvirt/qemu", "kptest-vg-*.xml"), ("/etc/libvirt/qemu/autostart", "kptest-vg-*"),
                ("/etc/libvirt/qemu/networks", "kptest-vg-*.xml"),
                ("/etc/libvirt/qemu/networks/autostart", "kptest-vg-*"),
                ("/etc/libvirt/storage", "kptest-vg-*.xml"), ("/etc/libvirt/storage/autostart", "kptest-vg-*"),
                ("/run/libvirt/network", "kptest-vg-*"), ("/run/libvirt/qemu", "kptest-vg-*"),
                ("/var/lib/libvirt/dnsmasq", "kptest-vg-*"), ("/var/tmp", "kptest-vg-*")]
    for directory, pattern in patterns:
        for leftover in Path(directory).glob(pattern):
            if keep is not None and leftover == keep:
                continue
            log(f"removing {leftover}, left by an earlier run")
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    namespaces = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout.split()
    for netns in namespaces:
        if netns.startswith("kptest-vg-"):
            log(f"removing network namespace {netns}, left by an earlier run")
            for pid in subprocess.run(["ip", "netns", "pids", netns], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)


def _comm(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _wait(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.vagrant_vms",
                                 description="Start libvirtd in a private netns and print how to use it.")
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--stop", metavar="PREFIX", help="tear down what an earlier run with this prefix made")
    args = ap.parse_args(argv)
    if args.stop:
        vms = VagrantVMs(args.workdir, prefix=args.stop)
        vms.started = [subprocess.Popen(["true"])]   # so that stop() also asks libvirt
        vms.stop()
        for pid in subprocess.run(["pgrep", "-x", "libvirtd|virtlogd"], stdout=subprocess.PIPE,
                                  text=True).stdout.split():
            os.kill(int(pid), signal.SIGTERM)
        return 0
    vms = VagrantVMs(args.workdir)
    vms.copy_project()
    vms.start()
    print(f"prefix {vms.prefix}; run: ip netns exec {vms.netns} env ... vagrant (see VagrantVMs.env)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
