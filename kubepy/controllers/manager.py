"""``kubepy controller-manager``: runs every reconcile loop in one process.

Controllers share one informer per resource; each has its own work queue.
``--controllers`` takes Kubernetes' syntax: ``*`` for all, ``-name`` to
turn one off, ``name`` to turn one on.

With ``--use-service-account-credentials`` (what ``kubepy controlplane`` runs,
as kubeadm does) each controller reads and writes as its own ServiceAccount in
kube-system (``SERVICE_ACCOUNTS``; ``kubepy.controllers.credentials``), holding
only its ``system:controller:<name>`` role; the shared informers and the start-up
check keep the controller manager's own identity.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket

from kubepy.client import Client, ClientConfig, EventRecorder, TransportError
from kubepy.client.workqueue import QUEUE_METRICS, QueueMetricsProvider
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.credentials import ServiceAccountCredentials

log = logging.getLogger(__name__)

# name -> "module:Class"; imported only when enabled.
CONTROLLERS = {
    "replicaset": "kubepy.controllers.replicaset:ReplicaSetController",
    "deployment": "kubepy.controllers.deployment:DeploymentController",
    "daemonset": "kubepy.controllers.daemonset:DaemonSetController",
    "endpoint": "kubepy.controllers.endpoints:EndpointsController",
    "endpointslice": "kubepy.controllers.endpointslice:EndpointSliceController",
    "endpointslicemirroring": "kubepy.controllers.endpointslicemirroring:EndpointSliceMirroringController",
    "nodelifecycle": "kubepy.controllers.nodelifecycle:NodeLifecycleController",
    "nodeipam": "kubepy.controllers.nodeipam:NodeIpamController",
    "garbagecollector": "kubepy.controllers.garbagecollector:GarbageCollector",
    "namespace": "kubepy.controllers.namespace:NamespaceController",
    "serviceaccount": "kubepy.controllers.serviceaccount:ServiceAccountController",
    "podgc": "kubepy.controllers.podgc:PodGCController",
    "replicationcontroller": "kubepy.controllers.replicaset:ReplicationManager",
    "disruption": "kubepy.controllers.disruption:DisruptionController",
    "job": "kubepy.controllers.job:JobController",
    "cronjob": "kubepy.controllers.cronjob:CronJobController",
    "statefulset": "kubepy.controllers.statefulset:StatefulSetController",
    "resourcequota": "kubepy.controllers.resourcequota:ResourceQuotaController",
    "root-ca-cert-publisher": "kubepy.controllers.rootcacertpublisher:RootCACertPublisher",
    "persistentvolume-binder": "kubepy.controllers.persistentvolume:PersistentVolumeController",
    "pvc-protection": "kubepy.controllers.volumeprotection:PVCProtectionController",
    "pv-protection": "kubepy.controllers.volumeprotection:PVProtectionController",
    "clusterrole-aggregation": "kubepy.controllers.clusterroleaggregation:ClusterRoleAggregationController",
    "service-lb": "kubepy.controllers.servicelb:ServiceLBController",
    "horizontalpodautoscaling": "kubepy.controllers.podautoscaler:HorizontalPodAutoscalerController",
}

# controller -> the ServiceAccount (kube-system) it runs as: upstream's names.
SERVICE_ACCOUNTS = {
    "replicaset": "replicaset-controller",
    "deployment": "deployment-controller",
    "daemonset": "daemon-set-controller",
    "endpoint": "endpoint-controller",
    "nodelifecycle": "node-controller",
    "nodeipam": "node-controller",
    "garbagecollector": "generic-garbage-collector",
    "namespace": "namespace-controller",
    "serviceaccount": "service-account-controller",
    "podgc": "pod-garbage-collector",
    "replicationcontroller": "replication-controller",
    "disruption": "disruption-controller",
    "job": "job-controller",
    "cronjob": "cronjob-controller",
    "statefulset": "statefulset-controller",
    "resourcequota": "resourcequota-controller",
    "root-ca-cert-publisher": "root-ca-cert-publisher",
    "persistentvolume-binder": "persistent-volume-binder",
    "pvc-protection": "pvc-protection-controller",
    "pv-protection": "pv-protection-controller",
    "clusterrole-aggregation": "clusterrole-aggregation-controller",
    "endpointslice": "endpointslice-controller",
    "endpointslicemirroring": "endpointslicemirroring-controller",
    "service-lb": "service-lb-controller",   # kubepy's (k3s: servicelb in its supervisor)
    "horizontalpodautoscaling": "horizontal-pod-autoscaler",
}


def enabled_controllers(spec: list[str]) -> list[str]:
    """Kubernetes' --controllers semantics over CONTROLLERS."""
    names: list[str] = []
    star = "*" in spec
    for name in CONTROLLERS:
        if f"-{name}" in spec:
            continue
        if star or name in spec:
            names.append(name)
    unknown = [s.lstrip("-") for s in spec if s != "*" and s.lstrip("-") not in CONTROLLERS]
    if unknown:
        raise ValueError(f"unknown controllers: {', '.join(unknown)} (known: {', '.join(CONTROLLERS)})")
    return names


def load(name: str) -> type:
    module, cls = CONTROLLERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


async def _wait_for_api(client: Client) -> None:
    delay = 0.2
    while True:
        try:
            await client.get("namespaces", "default")
            return
        except TransportError as e:
            log.info("waiting for the API server err=%s", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run_controller_manager(kubeconfig: str, config: ControllerConfig, *,
                                 stop: asyncio.Event | None = None,
                                 queue_metrics: QueueMetricsProvider | None = None) -> None:
    client = Client(ClientConfig.from_kubeconfig(kubeconfig), user_agent="kubepy-controller-manager")
    credentials = ServiceAccountCredentials(client) if config.use_service_account_credentials else None
    try:
        await _wait_for_api(client)
        informers = InformerFactory(client)
        recorders: list[EventRecorder] = []
        controllers = []
        names = enabled_controllers(config.controllers)
        clients = {name: client for name in names}
        if credentials is not None:  # one TokenRequest per service account, all at once
            accounts = sorted({SERVICE_ACCOUNTS[n] for n in names})
            own_clients = await asyncio.gather(*(credentials.client_for(sa, user_agent="kubepy-controller-manager")
                                                 for sa in accounts))
            by_sa = dict(zip(accounts, own_clients))
            clients = {name: by_sa[SERVICE_ACCOUNTS[name]] for name in names}
        metrics_token = QUEUE_METRICS.set(queue_metrics)  # the controllers' queues report workqueue_*{name}
        try:
            for name in names:
                own = clients[name]
                recorder = EventRecorder(own, component="controller-manager", host=socket.gethostname())
                recorders.append(recorder)
                ctx = ControllerContext(client=own, informers=informers, recorder=recorder, config=config)
                controllers.append(load(name)(ctx))
        finally:
            QUEUE_METRICS.reset(metrics_token)
        informers.start()
        await informers.wait_synced()
        log.info("controllers started names=%s", ",".join(c.name for c in controllers))
        tasks = [asyncio.create_task(c.run(), name=f"controller:{c.name}") for c in controllers]
        waiter = asyncio.create_task((stop or asyncio.Event()).wait())
        try:
            done, _ = await asyncio.wait({*tasks, waiter}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and t.exception():
                    raise t.exception()  # a controller died: let the supervisor restart us
        finally:
            for t in [*tasks, waiter]:
                t.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
            await informers.stop()
            for recorder in recorders:
                await recorder.stop()
    finally:
        if credentials is not None:
            await credentials.close()
        await client.close()
