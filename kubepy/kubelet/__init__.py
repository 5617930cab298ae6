"""The node agent: runs a node's pods through its own containerd.

Modules: ``containerd`` (the node's private containerd daemon), ``runtime``
(async adapter over the ``ctr`` CLI: images, containers, tasks, exec,
events), ``logshim`` (containerd binary log driver writing CRI-format log
files); pod networking and cgroups live beside them.
"""
