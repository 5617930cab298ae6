"""``kubepy metrics-server``: the resource metrics add-on (upstream's metrics-server), serving
``metrics.k8s.io/v1beta1`` NodeMetrics and PodMetrics behind the API server's aggregation layer.

- ``samples``: the kubelets' ``/metrics/resource`` text parsed, and the rate math (pure).
- ``server``: scraping every node, and the HTTPS API the API server proxies to.
- ``register``: the Service, Endpoints and APIService that make the API server send
  ``/apis/metrics.k8s.io`` here.
"""
