"""Root-CA publisher against the FakeAPI."""

from __future__ import annotations

from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.rootcacertpublisher import DESCRIPTION, NAME, RootCACertPublisher
from kubepy.testing.fakeapi import FakeAPI
from tests.controllers.test_replicaset import FakeRecorder

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def controller(api: FakeAPI) -> RootCACertPublisher:
    ctx = ControllerContext(client=api, informers=InformerFactory(api), recorder=FakeRecorder(),  # type: ignore[arg-type]
                            config=ControllerConfig())
    return RootCACertPublisher(ctx, ca_pem=PEM)


async def test_each_namespace_gets_the_ca_and_a_changed_one_is_put_back():
    api = FakeAPI()
    ctrl = controller(api)
    ns = api.seed("namespaces", {"metadata": {"name": "team"}, "status": {"phase": "Active"}})
    ctrl.namespaces.cache.set(ns)
    await ctrl.reconcile("team")
    [cm] = api.objects("configmaps")
    assert cm["metadata"]["namespace"] == "team" and cm["metadata"]["name"] == NAME
    assert cm["data"] == {"ca.crt": PEM}
    assert cm["metadata"]["annotations"] == {"kubernetes.io/description": DESCRIPTION}
    tampered = {**cm, "data": {"ca.crt": "nope"}}
    ctrl.configmaps.cache.set(api.seed("configmaps", tampered))
    await ctrl.reconcile("team")
    assert api.objects("configmaps")[0]["data"] == {"ca.crt": PEM}


async def test_a_terminating_namespace_is_left_alone():
    api = FakeAPI()
    ctrl = controller(api)
    ctrl.namespaces.cache.set(api.seed("namespaces", {"metadata": {"name": "old"}, "status": {"phase": "Terminating"}}))
    await ctrl.reconcile("old")
    assert api.objects("configmaps") == []
