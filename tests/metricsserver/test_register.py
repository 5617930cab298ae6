"""What the control plane writes so the API server sends /apis/metrics.k8s.io to its metrics server."""

from __future__ import annotations

import asyncio
import base64

from kubepy.metricsserver import register
from kubepy.testing.fakeapi import FakeAPI


async def test_register_is_idempotent_and_drops_endpoints_nobody_answers_on() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FakeAPI() as api:
            # A control plane that is gone left its address (127.0.0.5: nothing listens there).
            await api.create("endpoints", register.endpoints(["127.0.0.5"], port), namespace="kube-system")
            assert await register.apply(api, address="127.0.0.1", port=port, ca_pem=b"PEM") == (["127.0.0.1"], True)
            # Applied again (each control plane does, every few seconds): nothing to write.
            assert await register.apply(api, address="127.0.0.1", port=port, ca_pem=b"PEM") == (["127.0.0.1"], False)
            eps = await api.get("endpoints", "metrics-server", namespace="kube-system")
            assert eps["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
            svc = await api.get("services", "metrics-server", namespace="kube-system")
            assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]
            aps = await api.get("apiservices", "v1beta1.metrics.k8s.io")
            assert aps["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 443}
            assert base64.b64decode(aps["spec"]["caBundle"]) == b"PEM"
            assert (aps["spec"]["groupPriorityMinimum"], aps["spec"]["versionPriority"]) == (100, 100)
            # Another live control plane's address stays beside ours.
            assert await register.apply(api, address="127.0.0.2", port=port, ca_pem=b"PEM") == \
                (["127.0.0.1", "127.0.0.2"], True)
            eps = await api.get("endpoints", "metrics-server", namespace="kube-system")
            assert [a["ip"] for a in eps["subsets"][0]["addresses"]] == ["127.0.0.1", "127.0.0.2"]
            writes = [a for a in api.actions if a.verb in ("create", "update")]
            assert len([a for a in writes if a.resource == "apiservices"]) == 1  # unchanged: not written again
    finally:
        server.close()
        await server.wait_closed()


async def test_fields_the_api_server_defaulted_are_not_rewritten_on_each_refresh() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FakeAPI() as api:
            svc = register.service()
            svc["spec"].update({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "sessionAffinity": "None",
                                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                                "internalTrafficPolicy": "Cluster"})
            await api.create("services", svc, namespace="kube-system")
            await register.apply(api, address="127.0.0.1", port=port, ca_pem=b"PEM")
            before = len(api.actions)
            assert await register.apply(api, address="127.0.0.1", port=port, ca_pem=b"PEM") == (["127.0.0.1"], False)
            assert not [a for a in api.actions[before:] if a.verb in ("create", "update")]
            stored = await api.get("services", "metrics-server", namespace="kube-system")
            assert stored["spec"]["clusterIP"] == "10.96.0.20" and stored["spec"]["type"] == "ClusterIP"
            # What we own still wins: a changed port is written back.
            stored["spec"]["ports"][0]["port"] = 8443
            await api.update("services", stored)
            assert (await register.apply(api, address="127.0.0.1", port=port, ca_pem=b"PEM"))[1] is True
            assert (await api.get("services", "metrics-server", namespace="kube-system"))["spec"]["ports"][0]["port"] == 443
    finally:
        server.close()
        await server.wait_closed()
