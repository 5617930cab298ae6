"""kubepy netpol: NetworkPolicies enforced by iptables on every node, one agent per node.

Layers, each importing only those above it::

    rules   pure: policies + pods + namespaces → iptables-restore text (filter table)
    agent   informers + rate-limited sync runner, the iptables adapter; run_agent, cleanup
"""
