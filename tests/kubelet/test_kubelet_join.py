"""The kubelet joins once with the token in --bootstrap-token-file, saves its own credential
0600 in a 0700 root dir, and reuses it on every later start (a real API server, no containerd)."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path

import pytest

from kubepy.kubelet.config import KubeletConfig
from kubepy.kubelet.kubelet import connect
from kubepy.privatefiles import write_private
from tests.e2e.conftest import start_apiserver, stop_apiserver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv():
    tmp = Path(tempfile.mkdtemp(prefix="kpjoin-"))
    s = start_apiserver(tmp / "api")
    try:
        yield s
    finally:
        stop_apiserver(s)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _config(srv, root: Path, name: str, token_file: Path | None) -> KubeletConfig:
    return KubeletConfig(node_name=name, server=srv.url, ca_file=srv.data_dir / "ca.crt", root_dir=root,
                         bootstrap_token_file=token_file)


async def _whoami(client) -> int:
    # A node may read nodes; an unknown token gets 401 (raised by the client).
    try:
        await client.list("nodes")
        return 200
    finally:
        await client.close()


def test_joins_once_then_reuses_its_saved_credential(srv, tmp_path):
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "kubelet"
    root.mkdir(mode=0o755)  # as an older kubepy left it: narrowed at start
    token_file = tmp_path / "bootstrap-token"
    write_private(token_file, srv.bootstrap_token() + "\n")
    config = _config(srv, root, "kptest-join-a", token_file)
    client = asyncio.run(connect(config))
    token = client.config.token
    assert asyncio.run(_whoami(client)) == 200
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for f in (config.token_path, config.own_kubeconfig):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert config.token_path.read_text().strip() == token
    # A restart without any bootstrap token (the file is gone, as after expiry) uses the saved credential.
    token_file.unlink()
    again = asyncio.run(connect(_config(srv, root, "kptest-join-a", None)))
    assert again.config.token == token
    assert asyncio.run(_whoami(again)) == 200
    # Only the saved token, no kubeconfig (a crash between the two writes): still no second join.
    config.own_kubeconfig.unlink()
    third = asyncio.run(connect(_config(srv, root, "kptest-join-a", None)))
    assert third.config.token == token
    assert stat.S_IMODE(config.own_kubeconfig.stat().st_mode) == 0o600
    asyncio.run(third.close())


def test_a_second_machine_with_the_same_name_is_refused(srv, tmp_path):
    token_file = tmp_path / "bootstrap-token"
    write_private(token_file, srv.bootstrap_token() + "\n")
    first = asyncio.run(connect(_config(srv, tmp_path / "one", "kptest-join-b", token_file)))
    asyncio.run(first.close())
    with pytest.raises(SystemExit) as e:
        asyncio.run(connect(_config(srv, tmp_path / "two", "kptest-join-b", token_file)))
    assert "refused (409)" in str(e.value) and 'node "kptest-join-b"' in str(e.value)
    assert not (tmp_path / "two" / "kubelet.token").exists()


@pytest.mark.parametrize("content,needle", [
    (None, "does not exist"),
    ("BOOTSTRAP_TOKEN=abcdef.0123456789abcdef", "does not hold a bootstrap token"),
    ("abcdef.0123456789abcdef", "refused (401)"),  # well-formed, unknown to the server
])
def test_join_failures_say_why(srv, tmp_path, content, needle):
    token_file = tmp_path / "bootstrap-token"
    if content is not None:
        write_private(token_file, content)
    with pytest.raises(SystemExit) as e:
        asyncio.run(connect(_config(srv, tmp_path / "k", "kptest-join-c", token_file)))
    assert needle in str(e.value)


def test_bootstrap_token_flag_is_refused_with_a_message(capsys):
    import argparse

    from kubepy.kubelet.config import add_kubelet_flags

    p = argparse.ArgumentParser()
    add_kubelet_flags(p)
    with pytest.raises(SystemExit):
        p.parse_args(["--node-ip", "10.0.0.1", "--bootstrap-token", "abcdef.0123456789abcdef"])
    assert "--bootstrap-token-file" in capsys.readouterr().err
    args = p.parse_args(["--node-ip", "10.0.0.1", "--bootstrap-token-file", "/etc/kubepy/bootstrap-token"])
    assert args.bootstrap_token_file == Path("/etc/kubepy/bootstrap-token")
