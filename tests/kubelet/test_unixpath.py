"""Unix sockets in directories deeper than sockaddr_un's 108 bytes (a lab node's state dir)."""

from __future__ import annotations

import socket
from pathlib import Path

from kubepy.kubelet.unixpath import short_path


def test_bind_and_connect_beyond_the_kernels_path_limit(tmp_path: Path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "0123456789abcdef.sock"
    assert len(str(path)) > 108
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        with short_path(path) as addr:
            assert len(addr) < 108
            server.bind(addr)
        server.listen(1)
        assert path.exists()
        with short_path(path) as addr:
            client.connect(addr)
        conn, _ = server.accept()
        client.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        conn.close()


def test_short_paths_are_used_as_they_are(tmp_path: Path):
    with short_path(tmp_path / "a.sock") as addr:
        assert addr == str(tmp_path / "a.sock")
