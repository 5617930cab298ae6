"""kubepy ingress: Ingresses and Gateway API HTTPRoutes served by one real nginx, one controller + proxy per node.

Layers, each importing only those above it::

    model       pure: Ingresses + Services + EndpointSlices + Secrets → ProxyConfig
    gateway     pure: GatewayClasses + Gateways + HTTPRoutes onto the same model (after the Ingresses),
                and their statuses; gatewayapi/ holds the CRDs and the `kubepy` GatewayClass
    nginx       pure rendering of a ProxyConfig into nginx.conf; the nginx process adapter (-t, start, reload)
    controller  informers + rate-limited sync runner, status and Events; run_controller
"""
