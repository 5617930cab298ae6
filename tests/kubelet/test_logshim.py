"""CRI log format, rotation, and the shim run as containerd runs it (fds 3, 4, 5)."""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from pathlib import Path

from kubepy.kubelet.logshim import (
    CRILogWriter,
    ensure_shim_executable,
    format_cri_line,
    log_uri,
)

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [PF] .*\n$")


def lines(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        _ts, stream, tag, msg = line.split(" ", 3)
        out.append((stream, tag, msg))
    return out


def test_format_cri_line():
    ns = 1_795_258_800_123_456_789          # 2026-11-21T11:00:00.123456789Z
    assert format_cri_line("stdout", b"hello", now_ns=ns) == b"2026-11-21T11:00:00.123456789Z stdout F hello\n"
    assert format_cri_line("stderr", b"x", partial=True, now_ns=ns - 123_456_789) == \
        b"2026-11-21T11:00:00.000000000Z stderr P x\n"
    assert CRI_LINE.match(format_cri_line("stdout", b"now"))


def test_lines_split_across_chunks_and_streams(tmp_path: Path):
    w = CRILogWriter(tmp_path / "c.log")
    w.feed("stdout", b"hel")
    w.feed("stderr", b"e1\ne")
    w.feed("stdout", b"lo\nwor")
    w.feed("stdout", b"ld\n\n")
    w.close_stream("stderr")
    w.close()
    assert lines(tmp_path / "c.log") == [("stderr", "F", "e1"), ("stdout", "F", "hello"),
                                         ("stdout", "F", "world"), ("stdout", "F", ""), ("stderr", "F", "e")]


def test_long_lines_become_partial_pieces(tmp_path: Path):
    w = CRILogWriter(tmp_path / "c.log", max_line=4)
    w.feed("stdout", b"abcdefghij\nxy")
    w.close()
    assert lines(tmp_path / "c.log") == [("stdout", "P", "abcd"), ("stdout", "P", "efgh"),
                                         ("stdout", "F", "ij"), ("stdout", "F", "xy")]


def test_rotation_keeps_max_files(tmp_path: Path):
    path = tmp_path / "c.log"
    w = CRILogWriter(path, max_bytes=200, max_files=3)
    for i in range(40):
        w.feed("stdout", b"line %02d\n" % i)
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 200
    newest = [m for _s, _t, m in lines(path)]
    older = [m for _s, _t, m in lines(tmp_path / "c.log.1")]
    assert newest[-1] == "line 39" and older[-1] == f"line {int(newest[0][5:]) - 1:02d}"


def test_rotation_with_one_file_truncates(tmp_path: Path):
    w = CRILogWriter(tmp_path / "c.log", max_bytes=100, max_files=1)
    for i in range(10):
        w.feed("stdout", b"line %d\n" % i)
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["c.log"]
    assert lines(tmp_path / "c.log")[-1] == ("stdout", "F", "line 9")


def test_shim_runs_like_containerd_starts_it(tmp_path: Path):
    """fd 3 = stdout, fd 4 = stderr, fd 5 closed when ready; query pairs as arguments."""
    shim = ensure_shim_executable(tmp_path / "bin")
    assert ensure_shim_executable(tmp_path / "bin") == shim and os.access(shim, os.X_OK)
    uri = urllib.parse.urlparse(log_uri(shim, tmp_path / "c.log", max_bytes=1000, max_files=2))
    assert uri.scheme == "binary" and uri.path == str(shim)
    args = [x for k, v in urllib.parse.parse_qsl(uri.query) for x in (k, v)]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child arranges fds 3, 4, 5 as containerd's shim does
        os.dup2(out_r, 3), os.dup2(err_r, 4), os.dup2(ready_w, 5)
        os.execve(str(shim), [str(shim), *args], {"CONTAINER_ID": "c", "CONTAINER_NAMESPACE": "ns"})
    for fd in (out_r, err_r, ready_w):
        os.close(fd)
    assert os.read(ready_r, 1) == b""          # fd 5 closed: the shim is ready
    os.write(out_w, b"to stdout\npartial")
    os.write(err_w, b"to stderr\n")
    os.close(out_w)
    os.close(err_w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    got = lines(tmp_path / "c.log")
    assert sorted(got) == [("stderr", "F", "to stderr"), ("stdout", "F", "partial"), ("stdout", "F", "to stdout")]
    assert all(CRI_LINE.match(line + b"\n") for line in (tmp_path / "c.log").read_bytes().splitlines())


def test_shim_memory_is_small(tmp_path: Path):
    shim = ensure_shim_executable(tmp_path / "bin")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(out_r, 3), os.dup2(err_r, 4)
        os.execve(str(shim), [str(shim), "path", str(tmp_path / "m.log")], {})
    os.close(out_r)
    os.close(err_r)
    try:
        os.write(out_w, b"x\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (tmp_path / "m.log").exists():
            time.sleep(0.02)
        time.sleep(0.2)
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
        print(f"log shim RSS {rss_kb} kB")
        assert rss_kb < 20_000, rss_kb
    finally:
        os.close(out_w)
        os.close(err_w)
        os.waitpid(pid, 0)



def test_kubelet_writes_the_shim_under_its_root_dir_not_run(tmp_path: Path):
    """/run is noexec on systemd hosts (containerd then can't exec the shim): the kubelet
    keeps the wrapper in --root-dir, next to its other state."""
    from kubepy.kubelet.config import KubeletConfig
    from kubepy.kubelet.kubelet import make_runtime
    from kubepy.kubelet.runtime import ContainerSpec

    root = tmp_path / "kubelet"
    rt = make_runtime(KubeletConfig(container_runtime_endpoint="/run/containerd/containerd.sock", root_dir=root))
    uri = rt._log_uri(ContainerSpec(id="c1", image="x", log_path=str(tmp_path / "c1.log")))
    shim = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
    assert shim.parent == root / "bin", uri
    assert os.access(shim, os.X_OK)
