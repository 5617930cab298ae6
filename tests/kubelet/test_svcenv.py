"""Service environment variables: which Services, and the names Kubernetes gives them."""

from __future__ import annotations

from kubepy.kubelet.svcenv import service_env


def svc(ns: str, name: str, ip: str, *ports: dict) -> dict:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": list(ports)}}


KUBE = svc("default", "kubernetes", "10.96.0.1", {"name": "https", "port": 443, "protocol": "TCP"})
WEB = svc("shop", "web-front", "10.96.3.4", {"name": "http", "port": 80}, {"port": 8443, "protocol": "TCP"})


def test_variables_of_one_service():
    env = service_env([WEB], namespace="shop")
    assert env == {
        "WEB_FRONT_SERVICE_HOST": "10.96.3.4", "WEB_FRONT_SERVICE_PORT": "80", "WEB_FRONT_SERVICE_PORT_HTTP": "80",
        "WEB_FRONT_PORT": "tcp://10.96.3.4:80",
        "WEB_FRONT_PORT_80_TCP": "tcp://10.96.3.4:80", "WEB_FRONT_PORT_80_TCP_PROTO": "tcp",
        "WEB_FRONT_PORT_80_TCP_PORT": "80", "WEB_FRONT_PORT_80_TCP_ADDR": "10.96.3.4",
        "WEB_FRONT_PORT_8443_TCP": "tcp://10.96.3.4:8443", "WEB_FRONT_PORT_8443_TCP_PROTO": "tcp",
        "WEB_FRONT_PORT_8443_TCP_PORT": "8443", "WEB_FRONT_PORT_8443_TCP_ADDR": "10.96.3.4",
    }


def test_which_services():
    other_ns = svc("other", "db", "10.96.9.9", {"port": 5432})
    headless = svc("shop", "peers", "None", {"port": 7000})
    no_ip = svc("shop", "ext", "", {"port": 1})
    all_ = [KUBE, WEB, other_ns, headless, no_ip]
    env = service_env(all_, namespace="shop")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and "WEB_FRONT_SERVICE_HOST" in env
    assert not any(k.startswith(("DB_", "PEERS_", "EXT_")) for k in env)
    off = service_env(all_, namespace="shop", enable_service_links=False)
    assert set(off) == {k for k in env if k.startswith("KUBERNETES_")}
    # A pod in default gets the kubernetes Service once; a same-named Service of its own namespace wins.
    mine = svc("shop", "kubernetes", "10.96.7.7", {"port": 1234})
    assert service_env([KUBE, mine], namespace="shop")["KUBERNETES_SERVICE_HOST"] == "10.96.7.7"
    assert service_env([mine, KUBE], namespace="shop")["KUBERNETES_SERVICE_HOST"] == "10.96.7.7"
    assert service_env([KUBE], namespace="default")["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
