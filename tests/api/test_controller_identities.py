"""The control plane's components on their own identities, in process: the scheduler as
``system:kube-scheduler`` (may bind pods, may not create them) and the whole controller
manager with ``--use-service-account-credentials``: every controller reads and writes as
``system:serviceaccount:kube-system:<its SA>`` through a TokenRequest token, holding only its
``system:controller:<SA>`` role, and does its job (no request of a controller is refused).
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import authz, certs, rbac
from kubepy.api.controllerpolicy import CONTROLLER_RULES, ROLE_PREFIX
from kubepy.api.server import APIServer, ServerConfig
from kubepy.controllers.context import ControllerConfig
from kubepy.controllers.manager import CONTROLLERS, SERVICE_ACCOUNTS, run_controller_manager
from kubepy.store.base import open_store

USERS = {"admin": ("admin", "system:masters"), "sched": ("system:kube-scheduler", ""),
         "kcm": ("system:kube-controller-manager", "")}
SA_PREFIX = "system:serviceaccount:kube-system:"


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(self, who: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        resp = await self.client.request(method, path, json=body, headers={"Authorization": f"Bearer tok-{who}"})
        return resp.status, await resp.json()

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, out = await self.call("admin", method, path, body)
        assert status in (200, 201), f"{method} {path}: {status} {out}"
        return out


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    with (tmp_path / "tokens.csv").open("w") as f:
        for who, (user, groups) in USERS.items():
            csv.writer(f).writerow([f"tok-{who}", user, user, groups])
    certs.ensure_ca(tmp_path)
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Api(client), str(client.make_url("")).rstrip("/")
    finally:
        await client.close()
        await server.stop()
        await store.close()


def test_every_controller_has_its_service_account_and_role() -> None:
    assert set(SERVICE_ACCOUNTS) == set(CONTROLLERS)
    assert set(SERVICE_ACCOUNTS.values()) == set(CONTROLLER_RULES)


def test_the_autoscalers_role_covers_every_request_it_makes() -> None:
    """kubepy.controllers.podautoscaler's requests: its two informers, the target's /scale,
    PodMetrics, events, the status write and, after a 409 on that write, a GET of the HPA
    (upstream's role grants that get too). The whole-manager test below never meets the 409."""
    rules = CONTROLLER_RULES["horizontal-pod-autoscaler"]
    asks = [("list", "autoscaling", "horizontalpodautoscalers", ""),
            ("watch", "autoscaling", "horizontalpodautoscalers", ""),
            ("get", "autoscaling", "horizontalpodautoscalers", ""),
            ("update", "autoscaling", "horizontalpodautoscalers", "status"),
            ("get", "apps", "deployments", "scale"), ("update", "apps", "deployments", "scale"),
            ("list", "", "pods", ""), ("watch", "", "pods", ""), ("list", "metrics.k8s.io", "pods", ""),
            ("create", "", "events", ""), ("patch", "", "events", "")]
    refused = [ask for ask in asks if not rbac.rules_allow(
        authz.Attributes(None, ask[0], api_group=ask[1], resource=ask[2], subresource=ask[3]), rules)]
    assert not refused


async def test_the_scheduler_binds_pods_but_may_not_create_them(served: tuple[Api, str]) -> None:
    api, _ = served
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    status, out = await api.call("sched", "POST", "/api/v1/namespaces/default/pods", pod)
    assert status == 403 and out["reason"] == "Forbidden", out
    assert 'User "system:kube-scheduler" cannot create resource "pods"' in out["message"]
    await api.admin("POST", "/api/v1/namespaces/default/pods", pod)
    await api.admin("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
    status, _ = await api.call("sched", "GET", "/api/v1/pods")
    assert status == 200
    status, out = await api.call("sched", "POST", "/api/v1/namespaces/default/pods/p/binding",
                                 {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                                  "target": {"kind": "Node", "name": "n1"}})
    assert status == 201, out
    status, _ = await api.call("sched", "GET", "/api/v1/namespaces/default/secrets")
    assert status == 403


def _workloads(ns: str) -> list[tuple[str, dict[str, Any]]]:
    labels = {"app": "w"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    apps, batch = "/apis/apps/v1/namespaces/" + ns, "/apis/batch/v1/namespaces/" + ns
    return [
        (f"{apps}/deployments", {"metadata": {"name": "d"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"d": "1"}},
            "template": {**template, "metadata": {"labels": {"d": "1"}}}}}),
        (f"{apps}/statefulsets", {"metadata": {"name": "s"}, "spec": {
            "replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"s": "1"}},
            "template": {**template, "metadata": {"labels": {"s": "1"}}}}}),
        (f"{apps}/daemonsets", {"metadata": {"name": "ds"}, "spec": {
            "selector": {"matchLabels": {"ds": "1"}}, "template": {**template, "metadata": {"labels": {"ds": "1"}}}}}),
        (f"{batch}/jobs", {"metadata": {"name": "j"}, "spec": {"template": {
            **template, "spec": {**template["spec"], "restartPolicy": "Never"}}}}),
        (f"/api/v1/namespaces/{ns}/replicationcontrollers", {"metadata": {"name": "rc"}, "spec": {
            "replicas": 1, "selector": {"rc": "1"}, "template": {**template, "metadata": {"labels": {"rc": "1"}}}}}),
        (f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": "svc"}, "spec": {
            "selector": {"d": "1"}, "ports": [{"port": 80}]}}),
        (f"/api/v1/namespaces/{ns}/resourcequotas", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}}),
        (f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {"metadata": {"name": "pdb"}, "spec": {
            "minAvailable": 1, "selector": {"matchLabels": {"d": "1"}}}}),
        # below its minReplicas: the autoscaler scales d without needing metrics
        (f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers", {"metadata": {"name": "hpa"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "minReplicas": 2, "maxReplicas": 3}}),
    ]


async def _eventually(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Until check() is truthy; a check may return (False, detail) to say what is still missing.
    The deadline is generous: the whole controller manager shares a loaded CI host's two cores."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check()
        ok, detail = got if isinstance(got, tuple) else (got, "")
        if ok:
            return got
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what} {detail}".rstrip()
        await asyncio.sleep(0.05)


async def test_each_controller_runs_as_its_own_service_account(served: tuple[Api, str], tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    api, url = served
    caplog.set_level(logging.INFO, logger="kubepy.api.server")
    kubeconfig = tmp_path / "controller-manager.kubeconfig"
    certs.write_kubeconfig(kubeconfig, certs.kubeconfig(server=url, ca_pem=(tmp_path / "ca.crt").read_bytes(),
                                                        user="system:kube-controller-manager", token="tok-kcm"))
    await api.admin("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
    await api.admin("POST", "/api/v1/namespaces", {"metadata": {"name": "w"}})
    stop = asyncio.Event()
    cm = asyncio.create_task(run_controller_manager(str(kubeconfig), ControllerConfig(
        use_service_account_credentials=True, node_monitor_grace_period=3600), stop=stop))
    try:
        for path, body in _workloads("w"):
            await api.admin("POST", path, body)

        async def pods_of_every_owner() -> bool:
            pods = (await api.admin("GET", "/api/v1/namespaces/w/pods"))["items"]
            kinds = {ref["kind"] for p in pods for ref in p["metadata"].get("ownerReferences") or []}
            return kinds >= {"ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}
        await _eventually(pods_of_every_owner, "pods made by every workload controller")

        async def reconciled() -> tuple[bool, str]:
            sa = (await api.call("admin", "GET", "/api/v1/namespaces/w/serviceaccounts/default"))[0] == 200
            cm_ = (await api.call("admin", "GET", "/api/v1/namespaces/w/configmaps/kube-root-ca.crt"))[0] == 200
            ep = (await api.call("admin", "GET", "/api/v1/namespaces/w/endpoints/svc"))[0] == 200
            q = (await api.admin("GET", "/api/v1/namespaces/w/resourcequotas/q")).get("status", {}).get("used")
            pdb = (await api.admin("GET", "/apis/policy/v1/namespaces/w/poddisruptionbudgets/pdb")).get("status")
            node = (await api.admin("GET", "/api/v1/nodes/n1")).get("spec", {}).get("podCIDR")
            scaled = (await api.admin("GET", "/apis/apps/v1/namespaces/w/deployments/d"))["spec"]["replicas"] == 2
            hpa = (await api.admin("GET", "/apis/autoscaling/v2/namespaces/w/horizontalpodautoscalers/hpa")).get(
                "status", {}).get("lastScaleTime")
            done = {"service account": sa, "root CA": cm_, "endpoints": ep, "quota": q, "PDB": pdb,
                    "node CIDR": node, "scaled by the HPA": scaled, "HPA status": hpa}
            missing = [name for name, got in done.items() if not got]
            return not missing, f"(still missing: {', '.join(missing)})"
        await _eventually(reconciled, "service account, root CA, endpoints, quota, PDB, node CIDR and HPA")

        await api.admin("DELETE", "/api/v1/namespaces/w")

        async def namespace_gone() -> bool:
            return (await api.call("admin", "GET", "/api/v1/namespaces/w"))[0] == 404
        await _eventually(namespace_gone, "the namespace controller to empty and finalize w")
    finally:
        stop.set()
        await asyncio.wait_for(cm, 10)

    lines = [r.getMessage() for r in caplog.records]
    refused = [ln for ln in lines if ln.startswith("forbidden ") and SA_PREFIX in ln]
    assert not refused, "\n".join(refused)
    writers = {ln.split(" user=")[1].split()[0] for ln in lines if ln.startswith("request method=POST path=/api/v1/"
                                                                             "namespaces/w/pods ")}
    assert {SA_PREFIX + sa for sa in ("replicaset-controller", "statefulset-controller", "daemon-set-controller",
                                      "job-controller", "replication-controller")} <= writers, writers
    assert all(w.startswith(SA_PREFIX) for w in writers if w != "admin"), writers
    sas = {s["metadata"]["name"] for s in
           (await api.admin("GET", "/api/v1/namespaces/kube-system/serviceaccounts"))["items"]}
    assert set(SERVICE_ACCOUNTS.values()) <= sas
    assert yaml.safe_load(kubeconfig.read_text())["users"][0]["user"] == {"token": "tok-kcm"}
    bindings = {b["metadata"]["name"] for b in
                (await api.admin("GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"))["items"]}
    assert {ROLE_PREFIX + sa for sa in CONTROLLER_RULES} <= bindings
