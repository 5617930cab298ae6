"""Bad input against a real API server: every case is a 4xx Status that says
what is wrong, never a 500, and the server's memory stays bounded.

(Each case was a 500, or a 201 that stored garbage, before issue 11.)
"""

from __future__ import annotations

import json

import psutil
import pytest
import urllib3

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

CMS = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
MERGE, SMP, JSONPATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json",
                         "application/json-patch+json")


class Reply:
    def __init__(self, r: urllib3.BaseHTTPResponse) -> None:
        self.status = r.status
        self.warnings = r.headers.getlist("Warning")
        self.body = json.loads(r.data) if r.data and "json" in r.headers.get("Content-Type", "") else r.data

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else ""

    def __repr__(self) -> str:
        return f"{self.status} {self.body!r:.600}"


class Client:
    def __init__(self, srv) -> None:
        self.srv = srv
        self.pool = urllib3.PoolManager(ca_certs=str(srv.data_dir / "ca.crt"), cert_reqs="CERT_REQUIRED")
        self.auth = f"Bearer {srv.token()}"

    def __call__(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
                 ctype: str = "application/json") -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        r = self.pool.request(method, self.srv.url + path, body=data, retries=False, timeout=urllib3.Timeout(60),
                              headers={"Authorization": self.auth, "Content-Type": ctype})
        return Reply(r)


def nested_json(depth: int) -> str:
    """JSON text nested *depth* levels, built as text (json.dumps itself recurses)."""
    text = '"x"'
    for i in range(depth):
        text = '{"a":' + text + "}" if i % 2 else "[" + text + "]"
    return text


def yaml_bomb(levels: int = 9) -> bytes:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}",
             'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines).encode()


def deployment(name: str, **spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kubepy-i11-badinput-") as s:
        yield s


@pytest.fixture(scope="module")
def api(srv):
    c = Client(srv)
    assert c("POST", CMS, {"metadata": {"name": "target"}, "data": {"k": "v"}}).status == 201
    assert c("POST", DEPLOYS, deployment("target")).status == 201
    return c


def assert_status(reply: Reply, code: int, reason: str, *words: str) -> None:
    assert reply.status == code, reply
    assert reply.body["kind"] == "Status" and reply.body["reason"] == reason, reply
    for w in words:
        assert w in reply.message, reply


# (name, method, path, raw body, content type, code, reason, words in the message)
DEEP = nested_json(600)
CASES = [
    ("merge patch 600 deep", "PATCH", CMS + "/target", '{"x": ' + DEEP + "}", MERGE, 400, "BadRequest",
     "nested too deeply: more than 200 levels"),
    ("strategic merge patch 600 deep", "PATCH", CMS + "/target", '{"x": ' + DEEP + "}", SMP, 400, "BadRequest",
     "nested too deeply"),
    ("json patch 600 deep", "PATCH", CMS + "/target", '[{"op": "add", "path": "/x", "value": ' + DEEP + "}]",
     JSONPATCH, 400, "BadRequest", "nested too deeply"),
    ("create 970 deep", "POST", CMS, '{"metadata": {"name": "deep"}, "x": ' + nested_json(970) + "}",
     "application/json", 400, "BadRequest", "nested too deeply"),
    ("update 970 deep", "PUT", CMS + "/target", '{"metadata": {"name": "target"}, "x": ' + nested_json(970) + "}",
     "application/json", 400, "BadRequest", "nested too deeply"),
    ("lone surrogate", "POST", CMS, '{"metadata": {"name": "s"}, "data": {"a": "\\ud800"}}', "application/json",
     400, "BadRequest", "lone UTF-16 surrogate (\\ud800) at .data.a"),
    ("lone surrogate in a patch", "PATCH", CMS + "/target", '{"data": {"k": "\\udfff"}}', MERGE, 400, "BadRequest",
     "surrogate"),
    ("NaN", "POST", CMS, '{"metadata": {"name": "n"}, "data": {"a": NaN}}', "application/json", 400, "BadRequest",
     "NaN"),
    ("yaml alias bomb", "POST", CMS, yaml_bomb().decode(), "application/yaml", 400, "BadRequest",
     "yaml: document contains excessive aliasing"),
    ("yaml expanding past 3 MiB", "POST", CMS,
     "metadata: {name: big}\ndata: {a: &s " + "x" * 400_000 + "}\nx: [" + ", ".join(["*s"] * 9) + "]\n",
     "application/yaml", 413, "RequestEntityTooLarge", "limit is 3145728"),
    ("object over 1.5 MiB", "POST", "/api/v1/namespaces/default/pods",
     json.dumps({"metadata": {"name": "huge"}, "spec": {"containers": [
         {"name": "c", "image": "busybox", "args": ["x" * 1000] * 1700}]}}), "application/json",
     413, "RequestEntityTooLarge", "etcdserver: request is too large"),
    ("replicas 2^63", "POST", DEPLOYS, json.dumps(deployment("big", replicas=2**63)), "application/json", 400,
     "BadRequest", "cannot unmarshal number 9223372036854775808 into Go struct field DeploymentSpec.spec.replicas "
     "of type int32"),
    ("replicas over int32 in a patch", "PATCH", DEPLOYS + "/target", '{"spec": {"replicas": 2147483648}}', SMP,
     400, "BadRequest", "spec.replicas of type int32"),
    ("int64 field overflow", "PATCH", DEPLOYS + "/target",
     '{"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 9223372036854775808}}}}', MERGE, 400,
     "BadRequest", "PodSpec.spec.template.spec.terminationGracePeriodSeconds of type int64"),
    ("scale to 2^63", "PATCH", DEPLOYS + "/target/scale", '{"spec": {"replicas": 9223372036854775808}}', MERGE,
     400, "BadRequest", "into Go struct field ScaleSpec.spec.replicas of type int32"),
    ("scale PUT over int32", "PUT", DEPLOYS + "/target/scale",
     '{"metadata": {"name": "target"}, "spec": {"replicas": 2147483648}}', "application/json",
     400, "BadRequest", "into Go struct field ScaleSpec.spec.replicas of type int32"),
]


@pytest.mark.parametrize("name,method,path,raw,ctype,code,reason,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_status(api, name, method, path, raw, ctype, code, reason, words):
    assert_status(api(method, path, raw=raw.encode(), ctype=ctype), code, reason, words)


def test_the_limits_themselves_are_accepted(api):
    """200 levels (the limit) pass through create, update and every patch type."""
    deep = nested_json(198)  # + the object itself and "x"
    r = api("POST", CMS, raw=('{"metadata": {"name": "deep-ok"}, "x": ' + deep + "}").encode())
    assert r.status == 201, r
    assert r.warnings == ['299 - "unknown field \\"x\\""']  # and dropped: ConfigMaps have no field x
    for ctype, body in ((MERGE, '{"metadata": {"annotations": {"a": "1"}}, "x": ' + deep + "}"),
                        (SMP, '{"metadata": {"annotations": {"a": "2"}}, "x": ' + deep + "}"),
                        (JSONPATCH, '[{"op": "add", "path": "/x", "value": ' + deep + "}]")):
        r = api("PATCH", CMS + "/deep-ok", raw=body.encode(), ctype=ctype)
        assert r.status == 200, (ctype, r)
        assert "x" not in r.body
    assert api("GET", CMS + "/deep-ok").body["metadata"]["annotations"] == {"a": "2"}


def test_a_json_patch_cannot_nest_past_the_limit(api):
    # Each value is within the limit; a second operation nests one inside the other.
    half = nested_json(150)
    inside = "".join("/a" if i % 2 else "/0" for i in range(149, 9, -1))  # 140 levels into the first
    body = (f'[{{"op": "add", "path": "/x", "value": {half}}}, '
            f'{{"op": "add", "path": "/x{inside}/b", "value": {half}}}]')
    assert_status(api("PATCH", CMS + "/target", raw=body.encode(), ctype=JSONPATCH), 400, "BadRequest",
                  "the patched object is nested too deeply")
    r = api("PATCH", CMS + "/target", raw=body.split(", {")[0].encode() + b"]", ctype=JSONPATCH)
    assert r.status == 200 and "x" not in r.body, r  # one half alone is fine (and x is dropped)


def test_server_memory_stays_bounded(srv, api):
    proc = psutil.Process(srv.proc.pid)
    api("GET", CMS)  # warm up
    before = proc.memory_info().rss
    for _ in range(5):
        assert api("POST", CMS, raw=yaml_bomb(9).decode().encode(), ctype="application/yaml").status == 400
        assert api("POST", CMS, raw=yaml_bomb(12).decode().encode(), ctype="application/yaml").status == 400
        for ctype in (MERGE, SMP):
            assert api("PATCH", CMS + "/target", raw=('{"x": ' + nested_json(5000) + "}").encode(),
                       ctype=ctype).status == 400
        assert api("POST", CMS, raw=("[" * 1_000_000 + "]" * 1_000_000).encode()).status == 400
    grown = proc.memory_info().rss - before
    assert grown < 50 * 1024 * 1024, f"the API server grew by {grown / 1e6:.0f} MB"
    assert srv.proc.poll() is None


# -- unknown fields: fieldValidation=Strict | Warn (default) | Ignore ------------------------------
WARNINGS = ['299 - "unknown field \\"spec.foo\\""',
            '299 - "unknown field \\"spec.template.spec.containers[0].imagee\\""']


def _with_unknown(name: str) -> dict:
    d = deployment(name)
    d["spec"]["foo"] = 1
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    return d


def _has_unknown(obj: dict) -> bool:
    return "foo" in obj["spec"] or "imagee" in obj["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("mode", ["", "Warn", "Ignore"])
def test_unknown_fields_are_dropped(api, mode):
    q = f"?fieldValidation={mode}" if mode else ""
    name = f"unknown-{mode.lower() or 'default'}"
    want = [] if mode == "Ignore" else WARNINGS

    r = api("POST", DEPLOYS + q, _with_unknown(name))
    assert r.status == 201 and sorted(r.warnings) == sorted(want), r
    assert not _has_unknown(r.body) and not _has_unknown(api("GET", f"{DEPLOYS}/{name}").body)

    cur = api("GET", f"{DEPLOYS}/{name}").body
    upd = _with_unknown(name)
    upd["metadata"] = cur["metadata"]
    r = api("PUT", f"{DEPLOYS}/{name}{q}", upd)
    assert r.status == 200 and sorted(r.warnings) == sorted(want), r
    assert not _has_unknown(r.body)

    patches = [(MERGE, {"spec": {"foo": 1}}), (SMP, {"spec": {"foo": 1}}),
               (JSONPATCH, [{"op": "add", "path": "/spec/foo", "value": 1}])]
    for ctype, body in patches:
        r = api("PATCH", f"{DEPLOYS}/{name}{q}", body, ctype=ctype)
        assert r.status == 200, (ctype, r)
        assert r.warnings == ([] if mode == "Ignore" else [WARNINGS[0]]), (ctype, r)
        assert "foo" not in r.body["spec"]
    assert "foo" not in api("GET", f"{DEPLOYS}/{name}").body["spec"]


def test_unknown_fields_are_refused_when_strict(api):
    r = api("POST", DEPLOYS + "?fieldValidation=Strict", _with_unknown("strict"))
    assert_status(r, 400, "BadRequest", 'Deployment in version "v1" cannot be handled as a Deployment: '
                  'strict decoding error: ', 'unknown field "spec.foo"',
                  'unknown field "spec.template.spec.containers[0].imagee"')
    r = api("PUT", DEPLOYS + "/target?fieldValidation=Strict", _with_unknown("target"))
    assert_status(r, 400, "BadRequest", 'strict decoding error: ', 'unknown field "spec.foo"')
    for ctype, body in [(MERGE, {"spec": {"foo": 1}}), (SMP, {"spec": {"foo": 1}}),
                        (JSONPATCH, [{"op": "add", "path": "/spec/foo", "value": 1}])]:
        r = api("PATCH", DEPLOYS + "/target?fieldValidation=Strict", body, ctype=ctype)
        assert_status(r, 422, "Invalid", 'strict decoding error: unknown field "spec.foo"')
    assert api("GET", DEPLOYS + "/strict").status == 404
    assert "foo" not in api("GET", DEPLOYS + "/target").body["spec"]


def test_unknown_field_names_cannot_break_headers(api):
    """Names with control characters are quoted as Go's %q does; thousands of them make a bounded header."""
    r = api("PATCH", CMS + "/target", {"a\r\nX-Injected: 1": {"b\n": 1}}, ctype=MERGE)
    assert r.status == 200, r
    assert r.warnings == ['299 - "unknown field \\"a\\\\r\\\\nX-Injected: 1\\""'], r.warnings
    many = {f"unknown-{i:05}": i for i in range(5000)}
    r = api("PATCH", CMS + "/target", many, ctype=MERGE)
    assert r.status == 200, r
    assert 1 < len(r.warnings) < 100 and r.warnings[-1].endswith(' more warnings were dropped"'), r.warnings[-1]
    assert sum(len(w) for w in r.warnings) < 5000
    assert not any(k.startswith("unknown-") for k in api("GET", CMS + "/target").body)


def test_kubectl_apply_refuses_unknown_fields_and_create_validate_false_drops_them(srv):
    manifest = json.dumps(_with_unknown("kubectl-unknown"))
    cp = srv.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert cp.returncode != 0
    assert 'unknown field "spec.foo"' in cp.stderr, cp.stderr
    cp = srv.kubectl("create", "--validate=false", "-f", "-", input=manifest)
    got = json.loads(srv.kubectl("get", "deployment", "kubectl-unknown", "-o", "json").stdout)
    assert not _has_unknown(got)
