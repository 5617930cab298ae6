"""ServiceAllocator: LoadBalancer node ports and health-check node ports (pure)."""

from __future__ import annotations

import pytest

from kubepy.api.allocator import AllocationError, ServiceAllocator


def lb(**spec):
    return {"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                     "ports": [{"port": 80, "protocol": "TCP"}], **spec}}


def test_load_balancer_gets_node_ports_unless_told_not_to():
    a = ServiceAllocator("10.96.0.0/12")
    svc = lb()
    a.assign("ns/a", svc)
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    assert "healthCheckNodePort" not in svc["spec"]
    none = lb(allocateLoadBalancerNodePorts=False)
    a.assign("ns/b", none)
    assert "nodePort" not in none["spec"]["ports"][0]
    given = lb(allocateLoadBalancerNodePorts=False, ports=[{"port": 80, "protocol": "TCP", "nodePort": 30123}])
    a.assign("ns/c", given)
    assert given["spec"]["ports"][0]["nodePort"] == 30123


def test_local_policy_gets_a_health_check_node_port_kept_on_update_and_released():
    a = ServiceAllocator("10.96.0.0/12")
    svc = lb(externalTrafficPolicy="Local")
    a.assign("ns/a", svc)
    a.observe("ns/a", svc)
    hc = svc["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc != svc["spec"]["ports"][0]["nodePort"]
    update = lb(externalTrafficPolicy="Local", ports=[{"port": 80, "protocol": "TCP"}])
    a.assign("ns/a", update, svc)
    assert update["spec"]["healthCheckNodePort"] == hc
    other = lb(externalTrafficPolicy="Local", healthCheckNodePort=hc)
    with pytest.raises(AllocationError, match="already allocated"):
        a.assign("ns/b", other)
    cluster = lb(externalTrafficPolicy="Cluster")
    a.assign("ns/a", cluster, svc)
    a.observe("ns/a", cluster)
    assert "healthCheckNodePort" not in cluster["spec"]
    a.assign("ns/b", other)  # released: free for another Service
    assert other["spec"]["healthCheckNodePort"] == hc
