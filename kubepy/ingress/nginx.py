"""nginx, the proxy: ``render`` (pure) turns a ProxyConfig into nginx.conf; ``Nginx`` runs it.

Why nginx (the distribution's ``nginx-light``): ``nginx -t`` checks a whole
configuration before it is used; a reload (SIGHUP) starts new workers on the
new configuration while the old ones finish the requests they hold, so no
established connection is dropped; it terminates TLS per server name (SNI);
and upstream blocks proxy straight to pod IPs, with the next endpoint tried
on a connection error, as ingress-nginx does.

Everything lives in one state directory (per node in the lab): nginx.conf,
the certificates (``certs/<ns>_<secret>-<sha>.pem``, 0600, named by content
so a configuration being replaced never points at a changed file),
nginx.pid, error.log, access.log and nginx's temp dirs.

``Nginx.apply`` never leaves the proxy down: the new text is written beside
the live one and checked with ``nginx -t``; only a configuration that passes
replaces nginx.conf, then nginx is reloaded (or started, if it is not
running).  A failing check raises ``NginxError`` (with nginx's own words)
and the running nginx keeps serving the last good configuration.

Errors::

    NginxError      nginx -t refused a configuration, or nginx would not start
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path

from kubepy.ingress.model import Backend, Filters, Location, Match, ProxyConfig, Redirect, Server, server_name
from kubepy.privatefiles import write_private

__all__ = ["Nginx", "NginxError", "cert_file_name", "default_certificate", "render"]

log = logging.getLogger(__name__)

FAKE_CERT_CN = "Kubernetes Ingress Controller Fake Certificate"  # ingress-nginx's default certificate's name


class NginxError(Exception):
    def __init__(self, what: str, output: str) -> None:
        self.what, self.output = what, output
        super().__init__(f"{what}: {output.strip()[-2000:]}")


def cert_file_name(secret: str, pem: str) -> str:
    namespace, _, name = secret.partition("/")
    return f"{namespace}_{name}-{hashlib.sha256(pem.encode()).hexdigest()[:12]}.pem"


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The request headers every proxied request carries (the http block's; a location that sets any header of
# its own repeats them, as nginx inherits proxy_set_header only into locations that set none).
PROXY_HEADERS = (("Host", "$host"), ("X-Real-IP", "$remote_addr"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                 ("X-Forwarded-Host", "$host"), ("X-Forwarded-Proto", "$scheme"), ("Upgrade", "$http_upgrade"),
                 ("Connection", "$connection_upgrade"))
_WELL_KNOWN = {"http": 80, "https": 443}


def _serve(backend: Backend) -> str:
    """Proxy to the backend, or answer its status; its filters and failing share are the caller's."""
    return f"return {backend.status};" if backend.upstream is None else f"proxy_pass http://{backend.upstream};"


def _new_path(kind: str, value: str, prefix: str) -> list[str]:
    """Rewrite-phase steps that leave the path an HTTPRoute path modifier asks for in $kp_path."""
    if kind == "ReplaceFullPath":
        return [f"set $kp_path {_quote(value)};"]
    # ReplacePrefixMatch, as Gateway API's table has it: /foo/bar with prefix /foo and "/xyz" or "/xyz/" →
    # /xyz/bar; with "" or "/" → /bar; and never an empty path. (?s): a decoded path may hold a newline.
    return ['set $kp_rest "";',
            f"if ($uri ~ {_quote('(?s)^' + re.escape(prefix) + '(/.*)?$')}) {{ set $kp_rest $1; }}",
            f"set $kp_path {_quote(value.rstrip('/') + '$kp_rest')};",
            'if ($kp_path = "") { set $kp_path "/"; }']


def _port_text(r: Redirect, maps: list[str]) -> str:
    """The ``:port`` of a redirect's Location: left out where it is the scheme's own (Gateway API); with no
    scheme given that depends on the request's, so nginx decides it (a map on $scheme)."""
    if not r.port:
        return ""
    if r.scheme:
        return "" if r.port == _WELL_KNOWN.get(r.scheme) else f":{r.port}"
    own = next((scheme for scheme, port in _WELL_KNOWN.items() if port == r.port), None)
    if own is None:
        return f":{r.port}"
    var = f"$kp_port_{len(maps)}"
    maps += [f"    map $scheme {var} {{", f'        {own} "";', f'        default ":{r.port}";', "    }"]
    return var


def _request_headers(f: Filters, maps: list[str]) -> list[tuple[str, str]]:
    """Every request header the backend gets, one value each: the inherited ones, then RequestHeaderModifier's
    set, add (after the value the request has, or after set's) and remove, then URLRewrite's Host."""
    headers = {n.lower(): (n, v) for n, v in PROXY_HEADERS}
    for n, v in f.request_set:
        headers[n.lower()] = (n, v)
    for n, v in f.request_add:
        if n.lower() in {m.lower() for m, _ in f.request_set}:
            headers[n.lower()] = (headers[n.lower()][0], headers[n.lower()][1] + "," + v)
            continue
        var = f"$kp_add_{len(maps)}"
        source = "$http_" + n.lower().replace("-", "_")
        maps += [f"    map {source} {var} {{", f'        "" {_quote(v)};',
                 f"        default {_quote(source + ',' + v)};", "    }"]
        headers[n.lower()] = (n, var)
    for n in f.request_remove:
        headers[n.lower()] = (n, "")   # "" drops the header
    if f.rewrite_host:
        headers["host"] = ("Host", f.rewrite_host)
    return list(headers.values())


def _failing(backend: Backend, maps: list[str]) -> str | None:
    """A variable that is "y" for the share of requests ``backend.failing`` asks to answer 500, or None."""
    failed, total = backend.failing
    if not failed:
        return None
    var = f"$kp_fail_{len(maps)}"
    maps += [f'    split_clients "$request_id" {var} {{', f'        {100 * failed / total:.2f}% "y";', '        * "";',
             "    }"]
    return var


def _served(backend: Backend, maps: list[str]) -> list[str]:
    """The location's body for ``backend``, its HTTPRoute filters included; http-level maps go to ``maps``."""
    failing = _failing(backend, maps)
    out = [f"if ({failing}) {{ return 500; }}"] if failing else []
    f = backend.filters
    if f is None:
        return [*out, _serve(backend)]
    out += [f"proxy_hide_header {n};" for n in [n for n, _ in f.response_set] + list(f.response_remove)]
    out += [f"add_header {n} {_quote(v)} always;" for n, v in f.response_set + f.response_add]
    if f.redirect is not None:   # the response headers above apply to the redirect nginx answers
        r = f.redirect
        base = f"{r.scheme or '$scheme'}://{r.hostname or '$host'}{_port_text(r, maps)}"
        if r.path is None:
            return [*out, f"return {r.status} {_quote(base + '$request_uri')};"]
        return [*out, *_new_path(*r.path, f.prefix), f"return {r.status} {_quote(base + '$kp_path$is_args$args')};"]
    if f.request_set or f.request_add or f.request_remove or f.rewrite_host:
        out += [f"proxy_set_header {n} {_quote(v)};" for n, v in _request_headers(f, maps)]
    if f.rewrite_path is not None:
        out += [*_new_path(*f.rewrite_path, f.prefix), "rewrite ^ $kp_path break;"]
    return out + [_serve(backend)]


def _tests(match: Match) -> list[str]:
    """nginx ``if`` conditions that all hold when a request meets ``match``."""
    out = [f"$request_method = {_quote(match.method)}"] if match.method else []
    for prefix, items in (("$http_", [(n.lower().replace("-", "_"), t, v) for n, t, v in match.headers]),
                          ("$arg_", list(match.query))):
        for name, kind, value in items:
            out.append(f"{prefix}{name} ~ {_quote(f'^(?:{value})$')}" if kind == "RegularExpression" else
                       f"{prefix}{name} = {_quote(value)}")
    return out


def _location(loc: Location, maps: list[str], named: list[str]) -> list[str]:
    what = f"{loc.source} → {loc.backend.service}" if loc.source else "no rule matches"
    head = f"        location {loc.modifier} {_quote(loc.path)} {{  # {what}"
    if not loc.choices:
        return [head, *("            " + line for line in _served(loc.backend, maps)), "        }"]
    # HTTPRoute matches with conditions, first to last in precedence: nginx has no "and" in ``if``, so
    # each match counts its conditions that hold in $kp_ok; they are tried last to first, so the
    # first that holds is the one $kp_pick keeps.
    body = ['            set $kp_pick "";']
    for i, c in reversed(list(enumerate(loc.choices, 1))):
        tests = _tests(c.match)
        body += [f"            # {i}: {c.source} → {c.backend.service or c.backend.status}",
                 '            set $kp_ok "";',
                 *(f'            if ({t}) {{ set $kp_ok "${{kp_ok}}y"; }}' for t in tests),
                 f'            if ($kp_ok = "{"y" * len(tests)}") {{ set $kp_pick "{i}"; }}']
    # The share of a choice's (or the fallback's) requests that belongs to backendRefs that do not resolve.
    fails = [(str(i), _failing(c.backend, maps)) for i, c in enumerate(loc.choices, 1)]
    if loc.backend.filters is None:
        fails.append(("", _failing(loc.backend, maps)))
    if any(var for _, var in fails):
        body += ['            set $kp_fail "";',
                 *(f'            if ($kp_pick = "{i}") {{ set $kp_fail {var}; }}' for i, var in fails if var),
                 '            if ($kp_fail) { return 500; }']
    body += [f'            if ($kp_pick = "{i}") {{ {_serve(c.backend)} }}' for i, c in enumerate(loc.choices, 1)]
    if loc.backend.filters is not None:
        # What no choice takes is served with the rule's filters in a named location of its own (they cannot
        # sit beside the choices: headers are not set inside ``if``, and its rewrite steps would run for all).
        name = f"@kp_{sum(line.startswith('        location @') for line in named)}"
        named += [f"        location {name} {{  # {what}",
                  *("            " + line for line in _served(loc.backend, maps)), "        }"]
        return [head, *body, f"            error_page 599 = {name};", '            if ($kp_pick = "") { return 599; }',
                "        }"]
    # A location-level ``return`` would run whatever was picked (it is a rewrite-phase step, as ``if`` is).
    last = _serve(loc.backend)
    return [head, *body, "            " + (f'if ($kp_pick = "") {{ {last} }}' if loc.backend.upstream is None
                                          else last), "        }"]


def _server(server: Server, *, state_dir: Path, cert_files: Mapping[str, str], http_port: int | str,
            https_port: int | str, maps: list[str]) -> list[str]:
    default = " default_server" if not server.host else ""
    cert = str(state_dir / "certs" / cert_files[server.tls_secret]) if server.tls_secret else \
        str(state_dir / "default.pem")
    title = server.host or "default server (no rule's host matches)"
    out = [f"    # {title}; certificate: {server.tls_secret or 'default'}",
           "    server {",
           f"        listen {http_port}{default};",
           f"        listen {https_port} ssl{default};",
           f"        server_name {server_name(server.host, server.any_depth)};",
           f"        ssl_certificate {cert};",
           f"        ssl_certificate_key {cert};"]
    named: list[str] = []
    for loc in server.locations:
        out += _location(loc, maps, named)
    out += named
    out.append("    }")
    return out


def render(config: ProxyConfig, *, state_dir: Path, cert_files: Mapping[str, str], node: str = "",
           http_port: int | str = 80, https_port: int | str = 443,
           workers: int = 1) -> str:
    """nginx.conf for ``config``; ``cert_files``: secret namespace/name → file name under ``certs/``."""
    d = state_dir
    lines = [
        f"# kubepy ingress{' on ' + node if node else ''}: {len(config.ingresses)} Ingresses "
        f"({', '.join(config.ingresses) or 'none'}), {len(config.routes)} HTTPRoutes "
        f"({', '.join(config.routes) or 'none'}).",
        "# Rendered on every change and checked with nginx -t before it replaces the last good one: do not edit.",
        f"worker_processes {workers};",
        f"pid {d / 'nginx.pid'};",
        f"error_log {d / 'error.log'} notice;",
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        "    log_format ingress '$remote_addr \"$host\" \"$request\" $status $body_bytes_sent '",
        "                       'upstream=$upstream_addr upstream_status=$upstream_status ms=$request_time';",
        f"    access_log {d / 'access.log'} ingress;",
        *(f"    {kind}_temp_path {d / 'tmp' / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                    "scgi")),
        "    server_names_hash_bucket_size 128;",
        "    server_tokens off;",
        "    map $http_upgrade $connection_upgrade {",
        "        default upgrade;",
        "        \"\" \"\";",
        "    }",
        "    proxy_http_version 1.1;",
        *(f"    proxy_set_header {n} {v};" for n, v in PROXY_HEADERS),
        "    proxy_connect_timeout 5s;",
        # Stream bodies both ways instead of spooling them to temp files the workers (nobody) may not reach.
        "    proxy_request_buffering off;",
        "    proxy_max_temp_file_size 0;",
        "    proxy_next_upstream error timeout;",
        "    proxy_next_upstream_tries 3;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    for up in config.upstreams:
        # max_fails=0: readiness comes from the EndpointSlices, nginx never benches an endpoint on its own.
        weights = [f" weight={w}" for w in up.weights] if up.weights else [""] * len(up.servers)
        lines += [f"    upstream {up.name} {{",
                  *(f"        server {s}{w} max_fails=0;" for s, w in zip(up.servers, weights, strict=True)),
                  "        keepalive 16;", "    }"]
    servers: list[str] = []
    maps: list[str] = []   # HTTPRoute filters' header additions
    for server in config.servers:
        servers += _server(server, state_dir=state_dir, cert_files=cert_files, http_port=http_port,
                           https_port=https_port, maps=maps)
    lines += maps + servers
    lines.append("}")
    return "\n".join(lines) + "\n"


def default_certificate() -> str:
    """A self-signed certificate + key PEM, served to names no Secret covers (ingress-nginx's fake one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CERT_CN)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode()
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode())


class Nginx:
    """The nginx master of one state directory: checked, started, reloaded, stopped."""

    def __init__(self, state_dir: Path, *, binary: str = "nginx") -> None:
        self.dir = Path(state_dir)
        self.binary = binary
        self.conf = self.dir / "nginx.conf"
        self.pid_file = self.dir / "nginx.pid"
        self._proc: asyncio.subprocess.Process | None = None

    def prepare(self) -> None:
        for sub in ("certs", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not (self.dir / "default.pem").exists():
            write_private(self.dir / "default.pem", default_certificate())

    def write_certificates(self, certs: Mapping[str, str]) -> dict[str, str]:
        """Write each secret's PEM (if new); return secret → file name."""
        names = {}
        for secret, pem in certs.items():
            names[secret] = cert_file_name(secret, pem)
            path = self.dir / "certs" / names[secret]
            if not path.exists():
                write_private(path, pem)
        return names

    def prune_certificates(self, keep: set[str]) -> None:
        for path in (self.dir / "certs").glob("*.pem"):
            if path.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def _run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-p", f"{self.dir}/", "-e", str(self.dir / "error.log"), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def check(self, text: str, path: Path | None = None) -> None:
        """``nginx -t`` of ``text`` (written to ``path``, default nginx.conf.new); NginxError if refused."""
        path = path or self.dir / "nginx.conf.new"
        path.write_text(text)
        code, out = await self._run("-t", "-q", "-c", str(path))
        if code != 0:
            raise NginxError("nginx -t refused the configuration", out)

    def pid(self) -> int | None:
        """The running master's pid (ours, or one a previous run of the controller left running)."""
        if self._proc is not None and self._proc.returncode is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"nginx" in cmdline and str(self.conf).encode() in cmdline else None

    async def apply(self, text: str) -> str:
        """Check, install and load ``text``: "started", "reloaded" or "unchanged"."""
        if self.conf.exists() and self.conf.read_text() == text and self.pid() is not None:
            return "unchanged"
        new = self.dir / "nginx.conf.new"
        await self.check(text, new)
        os.replace(new, self.conf)
        pid = self.pid()
        if pid is None:
            await self.start()
            return "started"
        os.kill(pid, signal.SIGHUP)  # nginx -s reload: new workers, old ones finish their requests
        return "reloaded"

    def orphans(self) -> list[int]:
        """nginx processes of this state directory whose master is gone: workers of a master that was
        killed keep its listening sockets.  They are recognised by their working directory, which is the
        state directory (``start`` runs nginx there), so no other nginx is ever touched."""
        master, out = self.pid(), []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == master:
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                if ppid != master and (proc / "cmdline").read_bytes().startswith(b"nginx:") and \
                        os.readlink(proc / "cwd") == str(self.dir.resolve()):
                    out.append(int(proc.name))
        return out

    async def start(self, timeout: float = 10.0) -> None:
        """nginx in the foreground as our child (dies with our process group under the supervisor),
        after the leftovers of a master that was killed (they hold the ports)."""
        for pid in self.orphans():
            log.warning("nginx orphan killed pid=%d state_dir=%s", pid, self.dir)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        self._proc = await asyncio.create_subprocess_exec(
            self.binary, "-p", f"{self.dir}/", "-e", str(self.dir / "error.log"), "-c", str(self.conf),
            "-g", "daemon off;", cwd=self.dir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.pid_file.exists():
            if self._proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                tail = (self.dir / "error.log").read_text(errors="replace")[-2000:] \
                    if (self.dir / "error.log").exists() else ""
                raise NginxError(f"nginx did not start (exit {self._proc.returncode})", tail)
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGQUIT: graceful shutdown (workers finish their requests)."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if self._proc is not None and self._proc.pid == pid:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while Path(f"/proc/{pid}").exists() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
