"""``apiextensions.k8s.io/v1``: CustomResourceDefinition, and the kinds a CRD makes (``customresource``)."""
