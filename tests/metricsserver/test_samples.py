"""metrics-server's pure parts: the kubelet's /metrics/resource parsed, CPU rates from two scrapes,
quantities as upstream writes them, request attributes and selectors."""

from __future__ import annotations

import pytest

from kubepy.metricsserver.samples import (
    Point,
    Scrape,
    Storage,
    format_cpu,
    format_memory,
    format_window,
    parse_scrape,
    pod_summary,
)
from kubepy.metricsserver.server import Caller, _field_selector, forbidden_message, request_attributes

T0 = 1_700_000_000.0


def kubelet_text(t: float, *, node_cpu: float, ctr_cpu: float, start: float = T0 - 100, ctr_mem: int = 4096) -> str:
    ms = int(t * 1000)
    return f"""# HELP node_cpu_usage_seconds_total Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total {node_cpu} {ms}
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.048576e+06 {ms}
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{{container="app",namespace="default",pod="web"}} {ctr_cpu} {ms}
container_cpu_usage_seconds_total{{container="lonely",namespace="default",pod="web"}} 1 {ms}
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{{container="app",namespace="default",pod="web"}} {ctr_mem} {ms}
# TYPE container_start_time_seconds gauge
container_start_time_seconds{{container="app",namespace="default",pod="web"}} {start} {ms}
# TYPE scrape_error gauge
scrape_error 0
"""


def test_parse_keeps_the_kubelets_timestamps_and_drops_half_containers() -> None:
    s = parse_scrape(kubelet_text(T0, node_cpu=10.5, ctr_cpu=2.0), now=T0 + 99)
    assert s.node == Point(T0, 10.5, 1048576)
    assert s.pods == {("default", "web"): {"app": Point(T0, 2.0, 4096, T0 - 100)}}  # "lonely" has no memory


def test_parse_refuses_what_is_not_the_text_format() -> None:
    with pytest.raises(ValueError):
        parse_scrape("node_cpu_usage_seconds_total{ 1 2 3\n", now=T0)


@pytest.mark.parametrize(("second", "expected"), [
    # (node cpu, container cpu, dt, start) -> (node nanocores, pod nanocores) or None
    ((11.0, 2.5, 10.0, T0 - 100), (50_000_000, 50_000_000)),        # 0.5 core-s over 10 s = 50m
    ((20.5, 4.0, 5.0, T0 - 100), (2_000_000_000, 400_000_000)),     # 2 cores; 400m
    ((10.0, 2.5, 10.0, T0 - 100), (None, 50_000_000)),              # the node's counter went down: start over
    ((11.0, 2.5, 10.0, T0 + 5), (50_000_000, None)),                 # the container restarted: start over
    ((11.0, 2.5, 0.0, T0 - 100), (None, None)),                      # no newer sample: no rate yet
])
def test_rates_from_two_scrapes(second: tuple[float, float, float, float],
                                expected: tuple[int | None, int | None]) -> None:
    node_cpu, ctr_cpu, dt, start = second
    store = Storage()
    store.store("n1", parse_scrape(kubelet_text(T0, node_cpu=10.5, ctr_cpu=2.0), now=T0))
    assert store.node_rate("n1") is None and store.pod_rates("default", "web") is None  # one sample: no rate
    store.store("n1", parse_scrape(kubelet_text(T0 + dt, node_cpu=node_cpu, ctr_cpu=ctr_cpu, start=start,
                                                ctr_mem=8192), now=T0 + dt))
    node, pod = store.node_rate("n1"), store.pod_rates("default", "web")
    assert (node.nano_cores if node else None, pod["app"].nano_cores if pod else None) == expected
    if node is not None:
        assert node.window == dt and node.time == T0 + dt and node.memory == 1048576
    if pod is not None:
        assert pod["app"].memory == 8192


def test_a_pod_needs_every_container_and_sums_them() -> None:
    store = Storage()
    a0, b0 = Point(T0, 1.0, 100), Point(T0, 1.0, 200)
    store.store("n1", Scrape(pods={("ns", "p"): {"a": a0, "b": b0}}))
    store.store("n1", Scrape(pods={("ns", "p"): {"a": Point(T0 + 10, 2.0, 300), "b": b0}}))
    assert store.pod_rates("ns", "p") is None          # b has no second sample
    store.store("n1", Scrape(pods={("ns", "p"): {"a": Point(T0 + 20, 3.0, 300), "b": Point(T0 + 15, 4.0, 500)}}))
    rates = store.pod_rates("ns", "p")
    assert rates is not None
    whole = pod_summary(rates)
    assert whole.nano_cores == 100_000_000 + 200_000_000 and whole.memory == 800
    assert whole.time == T0 + 20 and whole.window == 10


def test_pods_and_nodes_that_go_away_are_forgotten() -> None:
    store = Storage()
    store.store("n1", Scrape(node=Point(T0, 1, 1), pods={("ns", "p"): {"a": Point(T0, 1, 1)}}))
    store.store("n2", Scrape(node=Point(T0, 1, 1), pods={("ns", "q"): {"a": Point(T0, 1, 1)}}))
    store.store("n1", Scrape(node=Point(T0 + 1, 2, 1)))
    assert store.pod_keys() == [("ns", "q")]
    store.forget_nodes(["n1"])
    assert store.pod_keys() == [] and list(store.nodes) == ["n1"]


def test_quantities_as_upstream_writes_them() -> None:
    assert format_cpu(123456789) == "123456789n" and format_cpu(-5) == "0n"
    assert format_memory(2048 * 1024) == "2048Ki" and format_memory(1000) == "1000" and format_memory(0) == "0"
    assert format_window(15.0) == "15s" and format_window(15.0126) == "15.013s"  # a Go duration


def test_request_attributes_and_refusals_in_upstreams_words() -> None:
    attrs = request_attributes("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/ns1/pods", {})
    assert attrs == {"resourceAttributes": {"verb": "list", "group": "metrics.k8s.io", "version": "v1beta1",
                                            "resource": "pods", "namespace": "ns1"}}
    assert forbidden_message(Caller("jane"), attrs) == (
        'pods.metrics.k8s.io is forbidden: User "jane" cannot list resource "pods" in API group '
        '"metrics.k8s.io" in the namespace "ns1"')
    node = request_attributes("GET", "/apis/metrics.k8s.io/v1beta1/nodes/n1", {})
    assert node["resourceAttributes"]["verb"] == "get" and node["resourceAttributes"]["name"] == "n1"
    assert request_attributes("GET", "/apis/metrics.k8s.io/v1beta1", {}) == {
        "nonResourceAttributes": {"path": "/apis/metrics.k8s.io/v1beta1", "verb": "get"}}


def test_field_selectors_only_name_and_namespace() -> None:
    assert _field_selector("metadata.name=web,metadata.namespace==default") == {
        "metadata.name": "web", "metadata.namespace": "default"}
    with pytest.raises(ValueError, match="field label not supported: spec.nodeName"):
        _field_selector("spec.nodeName=n1")
