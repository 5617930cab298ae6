"""The node agent: runs a node's pods through its own containerd.

Modules: ``containerd`` (the node's private containerd daemon), ``runtime``
(async adapter over the ``ctr`` CLI: images, containers, tasks, exec,
events), ``logshim`` (containerd binary log driver writing CRI-format log
files), ``attachio`` (the IO process of a container with stdin or a
terminal), ``attach`` (the kubelet's attach streams) and ``shimrpc`` (the two
shim calls ctr lacks); pod networking and cgroups live beside them.
"""
