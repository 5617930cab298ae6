"""schemathesis against the API server's own OpenAPI document: no request
it makes up, valid or not, may answer 5xx or drop the connection.

Bounded and deterministic: every operation of ``/openapi/v2`` (watches
with a one-second ``timeoutSeconds``), a few examples each, in three
flavours: valid requests on objects that exist (so patches and updates reach
the patchers and validation), then invalid ones on the same objects, then
invalid ones anywhere. Hypothesis is derandomized, so a run repeats exactly.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

EXAMPLES = 3  # per operation and flavour: ~3,900 requests in all
SHARES = 2  # processes generating requests
NAME = "st-target"
D = "/api/v1/namespaces/default/"
_TEMPLATE = {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}
EXISTING = [
    ("/api/v1/namespaces", {"metadata": {"name": NAME}}),
    ("/api/v1/nodes", {"metadata": {"name": NAME}}),
    (D + "configmaps", {"metadata": {"name": NAME}, "data": {"a": "b"}}),
    (D + "secrets", {"metadata": {"name": NAME}, "stringData": {"a": "b"}}),
    (D + "serviceaccounts", {"metadata": {"name": NAME}}),
    (D + "endpoints", {"metadata": {"name": NAME}}),
    (D + "events", {"metadata": {"name": NAME}, "involvedObject": {"kind": "Pod", "name": NAME}}),
    (D + "services", {"metadata": {"name": NAME}, "spec": {"ports": [{"port": 80}]}}),
    (D + "pods", {"metadata": {"name": NAME}, **_TEMPLATE}),
    ("/apis/apps/v1/namespaces/default/deployments", {"metadata": {"name": NAME}, "spec": {
        "selector": {"matchLabels": {"st": "d"}}, "template": {"metadata": {"labels": {"st": "d"}}, **_TEMPLATE}}}),
    ("/apis/apps/v1/namespaces/default/replicasets", {"metadata": {"name": NAME}, "spec": {
        "selector": {"matchLabels": {"st": "r"}}, "template": {"metadata": {"labels": {"st": "r"}}, **_TEMPLATE}}}),
    ("/apis/coordination.k8s.io/v1/namespaces/default/leases", {"metadata": {"name": NAME}}),
    ("/apis/networking.k8s.io/v1/ingressclasses", {"metadata": {"name": NAME},
                                                   "spec": {"controller": "kubepy.io/ingress"}}),
    ("/apis/networking.k8s.io/v1/namespaces/default/ingresses", {"metadata": {"name": NAME}, "spec": {
        "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}],
        "rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    # An APIService (to a Service without endpoints): the aggregator checks and writes it while the fuzzer runs.
    ("/apis/apiregistration.k8s.io/v1/apiservices", {
        "metadata": {"name": "v1.sttarget.kptest.example.com"},
        "spec": {"group": "sttarget.kptest.example.com", "version": "v1", "insecureSkipTLSVerify": True,
                 "service": {"namespace": "default", "name": NAME, "port": 443},
                 "groupPriorityMinimum": 100, "versionPriority": 100}}),
    # A custom resource, so its operations (schema, CEL, status, scale) are fuzzed too.
    ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {
        "metadata": {"name": "sttargets.kptest.example.com"},
        "spec": {"group": "kptest.example.com", "scope": "Namespaced",
                 "names": {"plural": "sttargets", "kind": "StTarget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                                        "statusReplicasPath": ".status.replicas"}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "x-kubernetes-validations": [
                                       {"rule": "!has(self.replicas) || self.replicas < 100"}],
                                       "properties": {"replicas": {"type": "integer", "default": 1},
                                                      "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                                               "items": {"type": "string"}},
                                                      "size": {"x-kubernetes-int-or-string": True}}},
                                   "status": {"type": "object",
                                              "properties": {"replicas": {"type": "integer"}}}}}}}]}}),
    ("/apis/kptest.example.com/v1/namespaces/default/sttargets", {"metadata": {"name": NAME}, "spec": {}}),
]


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kubepy-i11-schemathesis-") as s:
        yield s


def _session(ca: str, token: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    s.verify = ca
    s.headers["Authorization"] = f"Bearer {token}"
    return s


@pytest.fixture(scope="module")
def session(srv):
    s = _session(str(srv.data_dir / "ca.crt"), srv.token())
    for path, body in EXISTING:
        for _ in range(100):  # a custom resource's path is served once its CRD is established
            r = s.post(srv.url + path, json=body, timeout=60)
            if r.status_code != 404:
                break
            time.sleep(0.1)
        assert r.status_code == 201, (path, r.text)
    yield s
    s.close()


def _fuzz(doc: dict, url: str, ca: str, token: str, share: int, shares: int) -> tuple[int, list[str]]:
    """Every ``shares``-th operation from ``share``: its requests sent, and what failed on the server's side.

    Generating bodies (hypothesis drawing a StatefulSet takes ~0.3 s) is the test's cost, not the server's,
    so the operations are shared between processes; each (operation, flavour) is derandomized on its own,
    so the split sends the same requests as one process would."""
    session = _session(ca, token)
    operations = [r.ok() for r in schemathesis.openapi.from_dict(doc).get_all_operations()][share::shares]
    faults: list[str] = []
    sent = 0
    for op in operations:
        for mode, existing in ((GenerationMode.POSITIVE, True), (GenerationMode.NEGATIVE, True),
                               (GenerationMode.NEGATIVE, False)):
            fixed = {}
            if existing and "{namespace}" in op.path:
                fixed["namespace"] = "default"
            if existing and "{name}" in op.path:
                fixed["name"] = NAME

            # A list with watch=true streams until timeoutSeconds: keep that short.
            query = {"timeoutSeconds": 1} if any(p.name == "watch" for p in op.query) else None

            @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(generation_mode=mode, path_parameters=fixed or None, query=query))
            def call(case):
                nonlocal sent
                sent += 1
                curl = case.as_curl_command(base_url=url)
                try:
                    r = case.call(base_url=url, session=session, verify=session.verify, timeout=60)
                except requests.ConnectionError as e:  # the server dropped the connection: as bad as a 500
                    faults.append(f"connection dropped ({e}):\n  {curl}")
                    return
                if r.status_code >= 500:
                    faults.append(f"{r.status_code} {r.text[:300]}:\n  {curl}")

            try:
                call()
            except Exception as e:  # the document itself could not be turned into requests
                faults.append(f"{op.method.upper()} {op.path} ({mode}): schemathesis could not generate: {e!r}")
    session.close()
    return sent, faults


def test_no_request_is_a_server_error(srv, session):
    doc = session.get(srv.url + "/openapi/v2", timeout=60).json()
    operations = list(schemathesis.openapi.from_dict(doc).get_all_operations())
    assert len(operations) > 100, "the OpenAPI document lost its paths"

    started = time.monotonic()
    # Two processes on two cores (forked: the test's module and its settings are already loaded).
    with ProcessPoolExecutor(SHARES, mp_context=multiprocessing.get_context("fork")) as pool:
        shares = [pool.submit(_fuzz, doc, srv.url, session.verify, srv.token(), i, SHARES) for i in range(SHARES)]
        results = [share.result() for share in shares]
    sent = sum(n for n, _ in results)
    faults = [f for _, fs in results for f in fs]
    elapsed = time.monotonic() - started
    assert srv.proc.poll() is None, "the API server died"
    logged = [line for line in srv.log_path.read_text(errors="replace").splitlines()
              if "internal error" in line or "Unhandled exception" in line]
    print(f"schemathesis: {sent} requests over {len(operations)} operations in {elapsed:.0f}s")
    assert not faults and not logged, (f"{len(faults)} of {sent} requests failed on the server's side:\n"
                                       + "\n".join(faults[:20]) + "\n" + "\n".join(logged[:20]))
    assert sent > 300
