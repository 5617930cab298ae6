"""Connections that send nothing are closed, so they cannot exhaust the API
server's file descriptors; a watch on the same server keeps streaming."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time

import psutil
import pytest
import urllib3

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

HANDSHAKE, HEADERS, IDLE = 1.0, 2.0, 3.0
CLOSE_WITHIN = 60.0  # generous: the machine is shared and loaded


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kubepy-i11-timeouts-", extra=[
            "--tls-handshake-timeout", f"{HANDSHAKE}s", "--request-header-timeout", f"{HEADERS}s",
            "--idle-connection-timeout", f"{IDLE}s"]) as s:
        yield s


def _tls(srv) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.data_dir / "ca.crt"))


def _tcp(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=CLOSE_WITHIN)


def _closed_by_server(sock: socket.socket) -> bool:
    """Blocks until the server closes *sock* (True) or CLOSE_WITHIN passes (False)."""
    deadline = time.monotonic() + CLOSE_WITHIN
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
    return False


class Watch(threading.Thread):
    """A configmaps watch read line by line in the background."""

    def __init__(self, srv) -> None:
        super().__init__(daemon=True)
        self.pool = urllib3.PoolManager(ca_certs=str(srv.data_dir / "ca.crt"), cert_reqs="CERT_REQUIRED")
        self.resp = self.pool.request(
            "GET", srv.url + "/api/v1/namespaces/default/configmaps?watch=true", preload_content=False,
            headers={"Authorization": f"Bearer {srv.token()}"}, timeout=urllib3.Timeout(connect=10, read=None))
        assert self.resp.status == 200
        self.names: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            buf = b""
            for chunk in self.resp.stream(1024, decode_content=False):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    ev = json.loads(line)
                    self.names.append(ev["object"]["metadata"]["name"])
        except BaseException as e:  # recorded for the test to report
            self.error = e

    def close(self) -> None:
        self.resp.release_conn()
        self.pool.clear()


def test_silent_and_slow_connections_are_closed_while_a_watch_streams(srv):
    proc = psutil.Process(srv.proc.pid)
    watch = Watch(srv)
    watch.start()
    socks: list[socket.socket] = []
    try:
        fds_before = proc.num_fds()
        # 1. TCP only: never starts the TLS handshake (the handshake timeout).
        no_handshake = [_tcp(srv) for _ in range(10)]
        # 2. a handshake, then not one byte (the header timeout).
        silent = [_tls(srv).wrap_socket(_tcp(srv), server_hostname="127.0.0.1") for _ in range(10)]
        # 3. a request's headers started and never finished.
        partial = [_tls(srv).wrap_socket(_tcp(srv), server_hostname="127.0.0.1") for _ in range(10)]
        for s in partial:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # 4. one request answered, then idle on keep-alive (the idle timeout).
        idle = _tls(srv).wrap_socket(_tcp(srv), server_hostname="127.0.0.1")
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        socks = [*no_handshake, *silent, *partial, idle]
        assert proc.num_fds() >= fds_before + len(socks) - 2, "the connections should be open now"

        # 5. a slowloris: a header byte every half second; progress does not extend the deadline.
        slow = _tls(srv).wrap_socket(_tcp(srv), server_hostname="127.0.0.1")
        socks.append(slow)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_closed = False
        deadline = time.monotonic() + CLOSE_WITHIN
        while time.monotonic() < deadline:
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                slow_closed = True
                break
            time.sleep(0.5)
        assert slow_closed or _closed_by_server(slow), "a slowloris connection was never closed"

        for what, group in (("without a handshake", no_handshake), ("silent after the handshake", silent),
                            ("with unfinished headers", partial), ("idle on keep-alive", [idle])):
            still_open = [s for s in group if not _closed_by_server(s)]
            assert not still_open, f"{len(still_open)} connections {what} were not closed in {CLOSE_WITHIN}s"
        for s in socks:
            s.close()
        deadline = time.monotonic() + CLOSE_WITHIN
        while proc.num_fds() > fds_before + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.num_fds() <= fds_before + 2, (fds_before, proc.num_fds())

        # The watch outlived every timeout and still streams.
        http = urllib3.PoolManager(ca_certs=str(srv.data_dir / "ca.crt"), cert_reqs="CERT_REQUIRED")
        r = http.request("POST", srv.url + "/api/v1/namespaces/default/configmaps",
                         body=json.dumps({"metadata": {"name": "after-timeouts"}}).encode(),
                         headers={"Authorization": f"Bearer {srv.token()}", "Content-Type": "application/json"})
        assert r.status == 201
        deadline = time.monotonic() + CLOSE_WITHIN
        while "after-timeouts" not in watch.names and time.monotonic() < deadline and watch.error is None:
            time.sleep(0.1)
        assert "after-timeouts" in watch.names, (watch.names, watch.error)
        assert watch.is_alive() and watch.error is None
    finally:
        for s in socks:
            s.close()
        watch.close()
    assert "reason=RequestHeaderTimeout" in srv.log_path.read_text()


def test_a_busy_keep_alive_connection_is_reused(srv):
    """Requests closer together than the idle timeout share one connection."""
    s = _tls(srv).wrap_socket(_tcp(srv), server_hostname="127.0.0.1")
    try:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = b""
            while not reply.endswith(b"ok"):
                chunk = s.recv(4096)
                assert chunk, "the server closed a connection in use"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")
            time.sleep(IDLE / 4)
    finally:
        s.close()


def test_bad_timeouts_are_refused(tmp_path):
    import subprocess
    import sys

    cp = subprocess.run([sys.executable, "-m", "kubepy", "apiserver", "--data-dir", str(tmp_path),
                         "--bind-address", "127.0.0.1", "--port", "1", "--request-header-timeout", "0s"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2
    assert "request header timeout must be positive" in cp.stderr
