"""kubepy ingress: Ingresses served by a real nginx, one controller + proxy per node (host network).

Layers, each importing only those above it::

    model       pure: Ingresses + Services + EndpointSlices + Secrets → ProxyConfig
    nginx       pure rendering of a ProxyConfig into nginx.conf; the nginx process adapter (-t, start, reload)
    controller  informers + rate-limited sync runner, status and Events; run_controller
"""
