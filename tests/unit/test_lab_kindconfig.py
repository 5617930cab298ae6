"""`kubepy up --config`: kind's cluster file read into the lab's terms, and every field kubepy
cannot honour refused by its path."""

from __future__ import annotations

import pytest

from kubepy import cli
from kubepy.lab.cluster import ClusterState, dns_ip, up_conflict
from kubepy.lab.kindconfig import ConfigError, KindCluster, conflicting_flags, parse

HEAD = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"

# kind's docs (Configuration, "Extra Labels"), as people copy it.
KIND_DOCS_LABELS = HEAD + """\
nodes:
- role: control-plane
- role: worker
  labels:
    tier: frontend
- role: worker
  labels:
    tier: backend
"""


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return str(e.value)


def test_kind_docs_example_one_control_plane_two_labelled_workers() -> None:
    c = parse(KIND_DOCS_LABELS)
    assert (c.control_planes, c.nodes) == (1, 2)
    assert c.node_labels == [{"tier": "frontend"}, {"tier": "backend"}]
    assert (c.name, c.pod_subnet, c.service_subnet, c.api_server_port) == (None, None, None, None)


def test_three_control_planes_and_a_worker_name_and_port() -> None:
    c = parse(HEAD + """\
name: ha
nodes: [{role: control-plane}, {role: control-plane}, {role: control-plane},
        {role: worker, labels: {ingress-ready: true, example.com/disk: ssd}}]
networking: {apiServerPort: 7443, apiServerAddress: 127.0.0.1, ipFamily: ipv4, kubeProxyMode: iptables,
             disableDefaultCNI: false}
""")
    assert (c.control_planes, c.nodes, c.name, c.api_server_port) == (3, 1, "ha", 7443)
    assert c.node_labels == [{"ingress-ready": "true", "example.com/disk": "ssd"}]


@pytest.mark.parametrize("text", [HEAD, HEAD + "nodes: []\n", HEAD + "nodes: [{role: control-plane}]\n"])
def test_kinds_default_one_control_plane_gets_one_node_to_run_pods(text) -> None:
    c = parse(text)
    assert (c.control_planes, c.nodes, c.node_labels) == (1, 1, [{}])


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_kube_proxy_mode(mode) -> None:
    assert parse(HEAD + f"networking: {{kubeProxyMode: {mode}}}\n").proxy_mode == mode
    assert parse(HEAD).proxy_mode is None


def test_subnets() -> None:
    c = parse(HEAD + "networking: {podSubnet: 10.200.0.0/16, serviceSubnet: 10.100.0.0/16}\n")
    assert (c.pod_subnet, c.service_subnet) == ("10.200.0.0/16", "10.100.0.0/16")
    assert dns_ip(c.service_subnet) == "10.100.0.10"
    assert dns_ip("10.96.0.0/12") == "10.96.0.10"


@pytest.mark.parametrize("networking, message", [
    ("{podSubnet: not-a-cidr}", "networking.podSubnet: 'not-a-cidr': "),
    ("{podSubnet: 10.244.0.1/16}", "networking.podSubnet: '10.244.0.1/16': "),   # host bits set
    ("{podSubnet: 10.244.0.0/25}", "networking.podSubnet: 10.244.0.0/25: too small for a /24 per node"),
    ("{podSubnet: 'fd00:10:244::/56'}", "networking.podSubnet: fd00:10:244::/56: not supported by kubepy (IPv4"),
    ("{serviceSubnet: 10.96.0.0/29}", "networking.serviceSubnet: 10.96.0.0/29: the prefix must be /12 to /28"),
    ("{podSubnet: 10.0.0.0/8, serviceSubnet: 10.96.0.0/12}",
     "networking.serviceSubnet: 10.96.0.0/12 overlaps networking.podSubnet 10.0.0.0/8"),
])
def test_bad_subnets(networking, message) -> None:
    assert refusal(HEAD + f"networking: {networking}\n").startswith(message)


def test_a_pod_subnet_must_hold_a_slice_per_node() -> None:
    two_workers = HEAD + "nodes: [{role: control-plane}, {role: worker}, {role: worker}]\n"
    assert parse(two_workers + "networking: {podSubnet: 10.244.0.0/23}\n").pod_subnet == "10.244.0.0/23"
    assert "too small for a /24 per node on 3 nodes" in refusal(
        HEAD + "nodes: [{role: control-plane}, {role: worker}, {role: worker}, {role: worker}]\n"
        "networking: {podSubnet: 10.244.0.0/23}\n")


@pytest.mark.parametrize("field", ["featureGates: {SomeGate: true}", "runtimeConfig: {api/alpha: 'true'}",
                                   "kubeadmConfigPatches: ['kind: ClusterConfiguration']",
                                   "kubeadmConfigPatchesJSON6902: [{group: kubeadm.k8s.io}]",
                                   "containerdConfigPatches: ['[plugins]']",
                                   "containerdConfigPatchesJSON6902: ['[]']"])
def test_each_refused_cluster_field(field) -> None:
    assert refusal(HEAD + field + "\n") == f"{field.split(':')[0]}: not supported by kubepy"


@pytest.mark.parametrize("field", ["image: kindest/node:v1.29.2", "extraMounts: [{hostPath: /a, containerPath: /b}]",
                                   "extraPortMappings: [{containerPort: 80, hostPort: 80}]",
                                   "kubeadmConfigPatches: ['kind: JoinConfiguration']",
                                   "kubeadmConfigPatchesJSON6902: [{group: kubeadm.k8s.io}]"])
def test_each_refused_node_field(field) -> None:
    text = HEAD + f"nodes:\n- role: control-plane\n- role: worker\n  {field}\n"
    assert refusal(text) == f"nodes[1].{field.split(':')[0]}: not supported by kubepy"


def test_empty_refused_fields_ask_for_nothing() -> None:
    c = parse(HEAD + "featureGates: {}\nkubeadmConfigPatches: []\nnodes:\n- role: worker\n  extraMounts: []\n"
              "- role: control-plane\n  image: ''\nnetworking: {dnsSearch: []}\n")
    assert (c.control_planes, c.nodes) == (1, 1)


@pytest.mark.parametrize("networking, path", [
    ("{ipFamily: ipv6}", "networking.ipFamily: 'ipv6'"), ("{ipFamily: dual}", "networking.ipFamily: 'dual'"),
    ("{disableDefaultCNI: true}", "networking.disableDefaultCNI: True"),
    ("{kubeProxyMode: ipvs}", "networking.kubeProxyMode: 'ipvs'"),
    ("{kubeProxyMode: none}", "networking.kubeProxyMode: 'none'"),
    ("{apiServerAddress: 0.0.0.0}", "networking.apiServerAddress: '0.0.0.0'"),
    ("{dnsSearch: [example.com]}", "networking.dnsSearch"),
])
def test_refused_networking(networking, path) -> None:
    message = refusal(HEAD + f"networking: {networking}\n")
    assert message.startswith(path + ": not supported by kubepy"), message


def test_control_plane_labels_are_refused_by_name() -> None:
    assert refusal(HEAD + "nodes:\n- role: control-plane\n  labels: {ingress-ready: 'true'}\n") \
        .startswith("nodes[0].labels: not supported by kubepy on a control-plane node")


@pytest.mark.parametrize("text, message", [
    ("kind: Config\napiVersion: kind.x-k8s.io/v1alpha4\n", "kind: 'Config': must be Cluster"),
    ("apiVersion: kind.x-k8s.io/v1alpha4\n", "kind: missing: must be Cluster"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n",
     "apiVersion: 'kind.x-k8s.io/v1alpha3': must be kind.x-k8s.io/v1alpha4"),
    (HEAD + "nodes: [{role: control-plane}, {role: master}]\n",
     "nodes[1].role: 'master': must be control-plane or worker"),
    (HEAD + "nodes: [{role: worker}]\n", "nodes: needs at least one node with role: control-plane"),
    (HEAD + "nodes: [{role: control-plane, extra: 1}]\n",
     "nodes[0].extra: unknown field (not in kind's v1alpha4 Cluster)"),
    (HEAD + "networking: {podSubnets: 10.0.0.0/16}\n", "networking.podSubnets: unknown field"),
    (HEAD + "nodes: {role: worker}\n", "nodes: must be a list"),
    (HEAD + "name: Not_A_Name\n", "name: 'Not_A_Name': must be lowercase"),
    (HEAD + "networking: {apiServerPort: 70000}\n", "networking.apiServerPort: 70000: must be a port number"),
    (HEAD + "nodes: [{role: control-plane}, {role: worker, labels: {'a b': x}}]\n", "nodes[1].labels.a b: "),
    (HEAD + "nodes: [{role: control-plane}, {role: worker, labels: {node-role.kubernetes.io/worker: ''}}]\n",
     "nodes[1].labels.node-role.kubernetes.io/worker: a kubelet may not set this label"),
    ("- a\n- b\n", "file: not a kind Cluster (a YAML mapping), but list"),
    ("kind: [Cluster\n", "file: not YAML (line 2)"),
])
def test_bad_files(text, message) -> None:
    assert refusal(text).startswith(message)


def test_flags_given_with_the_file_must_agree_with_it() -> None:
    c = KindCluster(control_planes=3, worker_labels=({},), name="ha", api_server_port=7443)
    assert conflicting_flags(c, name=None, nodes=None, control_planes=None, port=None) == []
    assert conflicting_flags(c, name="ha", nodes=1, control_planes=3, port=7443) == []
    assert conflicting_flags(c, name="other", nodes=2, control_planes=1, port=6443) == [
        "--name other (the file's name is ha)", "--nodes 2 (the file makes 1 node)",
        "--control-planes 1 (the file has 3)", "--port 6443 (the file's networking.apiServerPort is 7443)"]
    assert conflicting_flags(KindCluster(), name="any", nodes=None, control_planes=None, port=1) == []


def test_the_file_s_labels_and_subnets_are_the_cluster_s(tmp_path) -> None:
    state = ClusterState("kp", 6443, nodes=2, zones="a", labels=[{"tier": "frontend"}, {"tier": "backend"}],
                         pod_subnet="10.200.0.0/16", service_subnet="10.100.0.0/16")
    state.save(tmp_path / "c.json")
    state = ClusterState.load(tmp_path / "c.json")
    assert state.node_labels(2) == {"tier": "backend", "topology.kubernetes.io/zone": "a"}
    assert (state.pods, state.services, state.dns_ip) == ("10.200.0.0/16", "10.100.0.0/16", "10.100.0.10")
    assert (ClusterState("kp", 1).pods, ClusterState("kp", 1).dns_ip) == ("10.244.0.0/16", "10.96.0.10")
    kw = dict(nodes=None, store=None, port=None, subnet=None)
    assert up_conflict(state, **kw, labels=[{"tier": "frontend"}, {"tier": "backend"}, {"new": "node"}]) is None
    assert "node 1 labelled tier=frontend, not tier=web as in --config" in up_conflict(
        state, **kw, labels=[{"tier": "web"}, {"tier": "backend"}])
    assert "pod subnet 10.200.0.0/16, not 10.244.0.0/16" in up_conflict(state, **kw, pod_subnet="10.244.0.0/16")
    assert "service subnet" in up_conflict(state, **kw, service_subnet="10.96.0.0/12")


def test_cli_refuses_with_a_one_line_error_and_exit_2(tmp_path, capsys) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(HEAD + "nodes:\n- role: control-plane\n- role: worker\n  extraMounts: [{hostPath: /a}]\n")
    assert cli.main(["up", "--config", str(path), "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "kubepy up: nodes[1].extraMounts: not supported by kubepy\n"
    path.write_text(KIND_DOCS_LABELS)
    assert cli.main(["up", "--config", str(path), "--nodes", "3", "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"kubepy up: --config {path} conflicts with --nodes 3 (the file makes 2 nodes)\n"
    assert not (tmp_path / "kubepy").exists()
