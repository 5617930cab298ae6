"""``kubepy controlplane --ready-file``: 0 while this host's API server answers /readyz, 1 otherwise,
for keepalived's track_file; probed over one kept-alive HTTPS connection, not a process per check."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from pathlib import Path

from kubepy.api import certs
from kubepy.controlplane import ReadyFile


class Readyz(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the API server
    status = 200
    connections: list[str] = []
    sockets: list = []

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(str(self.client_address))
        type(self).sockets.append(self.request)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"ok" if self.path == "/readyz" and type(self).status == 200 else b"not ready"
        self.send_response(type(self).status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def wait_for(fn, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_ready_file_follows_readyz_over_one_connection(tmp_path: Path):
    crt, key = certs.ensure_serving_cert(tmp_path, ["127.0.0.1"], name="apiserver")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = tmp_path / "run" / "apiserver-ready"
    ready = ReadyFile(path, data_dir=tmp_path, port=server.server_address[1], period=0.05, timeout=2)
    Readyz.status, Readyz.connections, Readyz.sockets = 503, [], []
    try:
        ready.start()
        assert path.read_text() == "1\n"   # not ready until a probe says so
        wait_for(lambda: len(Readyz.connections) >= 1)
        Readyz.status = 200
        wait_for(lambda: path.read_text() == "0\n")
        Readyz.status = 503
        wait_for(lambda: path.read_text() == "1\n")
        Readyz.status = 200
        wait_for(lambda: path.read_text() == "0\n")
        assert len(Readyz.connections) == 1   # every probe on the one connection
        path.write_text("1\n")   # someone else wrote it (a stopped unit's ExecStopPost): said again
        wait_for(lambda: path.read_text() == "0\n")
        server.shutdown()   # the API server dies: its listener and its connections go
        server.server_close()
        for sock in Readyz.sockets:
            sock.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: path.read_text() == "1\n")   # nothing answers: not ready
    finally:
        ready.stop()
        server.server_close()
    assert path.read_text() == "1\n"   # a stopped supervisor leaves the address to the others
    assert not path.with_name("apiserver-ready.tmp").exists()
