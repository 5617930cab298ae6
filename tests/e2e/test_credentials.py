"""Credentials on a real lab cluster, checked as an unprivileged user (nobody, via setpriv).

- no token or key appears in any process's command line (``ps -eo args`` as nobody);
- nothing under the cluster's state dir is readable by nobody, and every file
  holding a secret is 0600 in a 0700 dir (checked as root too, so a looser
  parent would not hide a loose file);
- the join endpoint refuses an existing node name and never hands out its token;
- an expired bootstrap token is refused with a message; a fresh one from
  ``kubepy token create`` lets a new name join, once;
- a node credential dies with its Node (or by an admin's revocation).

One lab cluster (one node) for the module. Its state root is a fresh dir with
/var/lib/kubepy's mode (0755), so the cluster dir's own mode is what is tested.
Traffic goes only to the cluster's API server on the lab bridge.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
# Files that hold a secret, by name (the walk as root checks their modes wherever they are).
SECRET_NAMES = {"state.db", "state.db-wal", "state.db-shm", "ca.key", "apiserver.key", "tokens.csv", "admin.key", "sa.key",
                "admin.kubeconfig", "bootstrap-token", "kubelet.token", "kubelet.kubeconfig", "kubelet.key",
                "kubelet-server.key", "scheduler.key", "scheduler.kubeconfig", "controller-manager.key",
                "controller-manager.kubeconfig", "apiserver-kubelet-client.key",
                # the node add-ons' own credentials: in the control plane's dir and each node's addons/
                "proxy.key", "proxy.kubeconfig", "dns.key", "dns.kubeconfig", "netpol.key", "netpol.kubeconfig"}

# Run by nobody with the system's python: every path it could list or open under the root.
WALK = r"""
import json, os, sys
readable = []
def visit(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    readable.append(path + "/")
    for n in names:
        p = os.path.join(path, n)
        if os.path.islink(p):
            continue
        if os.path.isdir(p):
            visit(p)
        else:
            try:
                with open(p, "rb") as f:
                    f.read(1)
                readable.append(p)
            except OSError:
                pass
visit(sys.argv[1])
print(json.dumps(readable))
"""


class Lab:
    def __init__(self) -> None:
        self.name = f"kptcred-{secrets.token_hex(3)}"
        self.root = Path(tempfile.mkdtemp(prefix="kpcred-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # as /var/lib/kubepy is
        self.dir = self.root / self.name

    def kubepy(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        lab = args[0] in ("up", "down", "status")
        argv = [sys.executable, "-m", "kubepy", *args, *(["--name", self.name, "--state-dir", str(self.root)]
                                                          if lab else [])]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode:
            raise AssertionError(f"kubepy {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp

    @property
    def cp_dir(self) -> Path:
        return self.dir / "controlplane"

    @property
    def kubeconfig(self) -> Path:
        return self.cp_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    def admin_token(self) -> str:
        return yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]["token"]

    def node_name(self) -> str:
        return f"{self.name}-node1"

    def node_token(self) -> str:
        return (self.dir / "nodes" / self.node_name() / "kubelet" / "kubelet.token").read_text().strip()

    def call(self, method: str, path: str, token: str | None, body: object = None) -> tuple[int, dict]:
        ctx = ssl.create_default_context(cafile=str(self.cp_dir / "ca.crt"))
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.server + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def join(self, token: str, node: str) -> tuple[int, dict]:
        return self.call("POST", "/kubepy/v1/join", token, {"nodeName": node})


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.kubepy("up", "--nodes", "1")
        assert "ready in" in up.stdout, up.stdout
        yield lab
    finally:
        try:
            lab.kubepy("down", check=False, timeout=300)
        finally:
            shutil.rmtree(lab.root, ignore_errors=True)


def as_nobody(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *cmd], capture_output=True, text=True, timeout=60, cwd="/", **kw)


# -- nothing to read in ps or in the state tree ------------------------------------------------------

def test_no_token_or_key_in_any_command_line(lab):
    ps = as_nobody("ps", "-ww", "-eo", "args")  # -ww: whole command lines, not 80 columns
    assert ps.returncode == 0, ps.stderr
    # The listing does show the cluster's daemons to nobody: the check below looks at them.
    kubelet_lines = [line for line in ps.stdout.splitlines() if " kubelet " in line and lab.node_name() in line]
    assert kubelet_lines, ps.stdout
    assert any("--bootstrap-token-file" in line for line in kubelet_lines), kubelet_lines
    bootstrap = (lab.dir / "bootstrap-token").read_text().strip()
    key_lines = [line for name in ("ca.key", "apiserver.key")
                 for line in (lab.cp_dir / name).read_text().splitlines() if line and "-----" not in line]
    secrets_ = {"admin token": lab.admin_token(), "node token": lab.node_token(), "bootstrap token": bootstrap,
                "bootstrap token secret": bootstrap.split(".")[1], **{f"key line {i}": k for i, k in enumerate(key_lines)}}
    for what, value in secrets_.items():
        assert value and value not in ps.stdout, f"the {what} is visible in ps to every user"
    ours = [line for line in ps.stdout.splitlines() if str(lab.root) in line]
    assert len(ours) >= 5, ours  # control plane, its children, containerd, kubelet, proxy, DNS
    for line in ours:
        words = line.split()
        assert "--bootstrap-token" not in words and "--token" not in words, line


def test_state_tree_is_not_readable_by_others(lab):
    walk = as_nobody("/usr/bin/python3", "-c", WALK, str(lab.root))
    assert walk.returncode == 0, walk.stderr
    readable = json.loads(walk.stdout)
    # nobody reaches the state root (0755, like /var/lib/kubepy) but nothing of the cluster.
    assert str(lab.root) + "/" in readable, "the walk must start where nobody can look"
    assert [p for p in readable if p.startswith(str(lab.dir))] == []


def test_secret_files_are_0600_and_their_dirs_0700(lab):
    assert stat.S_IMODE(lab.dir.stat().st_mode) == 0o700
    found: dict[str, int] = {}
    loose_dirs = []
    for dirpath, dirnames, filenames in os.walk(lab.dir):
        for f in filenames:
            if f in SECRET_NAMES:
                found[os.path.join(dirpath, f)] = stat.S_IMODE(os.lstat(os.path.join(dirpath, f)).st_mode)
                mode = stat.S_IMODE(os.stat(dirpath).st_mode)
                if mode & 0o077:
                    loose_dirs.append((dirpath, oct(mode)))
    names = {Path(p).name for p in found}
    # Every kind of secret this cluster has was found (so the check looked at them).
    assert {"state.db", "ca.key", "apiserver.key", "tokens.csv", "admin.kubeconfig", "bootstrap-token",
            "kubelet.token", "kubelet.kubeconfig", "kubelet-server.key", "scheduler.key", "scheduler.kubeconfig",
            "controller-manager.key", "controller-manager.kubeconfig", "proxy.kubeconfig", "dns.kubeconfig",
            "netpol.kubeconfig", "proxy.key", "dns.key", "netpol.key"} <= names, names
    nodes_copies = [p for p in found if "/nodes/" in p and "/addons/" in p and p.endswith(".kubeconfig")]
    assert len(nodes_copies) == 3, found  # proxy, dns, netpol on the one node
    assert {p: oct(m) for p, m in found.items() if m & 0o077} == {}
    assert loose_dirs == []


# -- joining ----------------------------------------------------------------------------------------

def test_join_refuses_an_existing_node_name(lab):
    bootstrap = (lab.dir / "bootstrap-token").read_text().strip()
    node, node_token = lab.node_name(), lab.node_token()
    for who, token in (("bootstrap", bootstrap), ("admin", lab.admin_token())):
        code, body = lab.join(token, node)
        assert code == 409, (who, body)
        assert body["kind"] == "Status" and body["reason"] == "Conflict"
        assert f'node "{node}"' in body["message"], body
        assert node_token not in json.dumps(body)
    # The node itself is unharmed: its token still works.
    assert lab.call("GET", f"/api/v1/nodes/{node}", node_token)[0] == 200


def test_expired_bootstrap_token_is_refused(lab):
    cp = lab.kubepy("token", "create", "--ttl", "2s", "--data-dir", str(lab.cp_dir))
    token = cp.stdout.strip()
    deadline = time.monotonic() + 60
    while True:
        code, body = lab.join(token, f"{lab.name}-late")
        if code != 201 and "expired" in body.get("message", ""):
            break
        assert code in (201, 401), body
        if code == 201:  # joined before it expired (a slow machine): the name is spent, try another
            lab.call("DELETE", f"/kubepy/v1/nodecredentials/{lab.name}-late", lab.admin_token())
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(1)
    assert code == 401 and body["reason"] == "Unauthorized"
    assert f"bootstrap token {token.split('.')[0]} expired at" in body["message"]
    # A wrong secret with the same id says nothing about expiry.
    code, body = lab.join(token.split(".")[0] + ".0000000000000000", f"{lab.name}-late")
    assert code == 401 and "expired" not in body.get("message", "")


def test_fresh_token_joins_a_new_name_once_and_the_credential_dies_with_its_node(lab):
    cp = lab.kubepy("token", "create", "--data-dir", str(lab.cp_dir), "--description", "credential test")
    token = cp.stdout.strip()
    listed = lab.kubepy("token", "list", "--data-dir", str(lab.cp_dir)).stdout
    row = next(line for line in listed.splitlines() if line.startswith(token))
    assert row.split()[1] in ("23h", "24h") and "authentication" in row and "credential test" in row, listed
    new = f"{lab.name}-extra"
    code, body = lab.join(token, new)
    assert code == 201, body
    issued = body["token"]
    assert lab.join(token, new)[0] == 409  # once
    # The credential is this node's: it may write its own Node, and no other.
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": new}}
    assert lab.call("POST", "/api/v1/nodes", issued, node)[0] == 201
    assert lab.call("POST", "/api/v1/nodes", issued, {**node, "metadata": {"name": new + "x"}})[0] == 403
    assert lab.join(token, new)[0] == 409
    # Deleting the Node revokes the credential; the name may join again.
    assert lab.call("DELETE", f"/api/v1/nodes/{new}", lab.admin_token())[0] == 200
    deadline = time.monotonic() + 30
    while lab.call("GET", "/api/v1/nodes", issued)[0] != 401:
        assert time.monotonic() < deadline, "the deleted node's credential still works"
        time.sleep(0.5)
    code, body = lab.join(token, new)
    assert code == 201, body
    # An admin revokes a credential whose Node was never registered.
    assert lab.call("DELETE", f"/kubepy/v1/nodecredentials/{new}", body["token"])[0] == 403
    assert lab.call("DELETE", f"/kubepy/v1/nodecredentials/{new}", lab.admin_token())[0] == 200
    assert lab.call("GET", "/api/v1/nodes", body["token"])[0] == 401
    assert lab.call("DELETE", f"/kubepy/v1/nodecredentials/{new}", lab.admin_token())[0] == 404
    # A revoked bootstrap token joins nothing.
    lab.kubepy("token", "delete", token.split(".")[0], "--data-dir", str(lab.cp_dir))
    assert lab.join(token, new + "-2")[0] == 401
