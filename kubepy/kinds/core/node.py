"""Node (v1): cluster-scoped; its kubelet writes status, proxy reaches the kubelet."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import node_fields

NODE = register(Kind(
    "", "v1", "Node", "nodes", namespaced=False, short_names=("no",), subresources=("status", "proxy"),
    has_status=True, model="V1Node", proto="Node",
    strategy=Strategy(default=v.default_node, validate=v.validate_node),
    printer=printers.NODE, fields=node_fields,
))
