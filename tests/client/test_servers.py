"""Several API servers in one kubeconfig (kubepy.client.config): read, and failed over between."""

from __future__ import annotations

import yaml

from kubepy.client import Client, ClientConfig
from kubepy.client.config import servers_extension
from tests.e2e.conftest import free_port


def test_a_kubeconfig_lists_every_server_in_an_extension_kubectl_ignores(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443/", "extensions": servers_extension(
            ["https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443/"])}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    config = ClientConfig.from_kubeconfig(path)
    assert config.server == "https://10.0.0.1:6443"
    assert config.servers == ["https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"]
    assert ClientConfig(server="https://a:1", token=None).servers == ["https://a:1"]


async def test_a_server_that_refuses_connections_is_passed_over_for_the_next(tmp_path):
    from tests.e2e.conftest import running_apiserver

    with running_apiserver("kptest-failover-") as srv:
        real = ClientConfig.from_kubeconfig(srv.kubeconfig)
        dead = f"https://127.0.0.1:{free_port()}"
        config = ClientConfig(server=dead, servers=[dead, real.server], token=real.token, ca_data=real.ca_data,
                              client_cert=real.client_cert, client_key=real.client_key)
        async with Client(config) as client:
            ns = await client.get("namespaces", "default")
            assert ns["metadata"]["name"] == "default" and client.server == real.server
            await client.create("configmaps", {"metadata": {"name": "x"}}, namespace="default")
            assert client.server == real.server  # it stays on the live one
