"""Vocabulary every component shares: label and field selectors, quantities,
name syntax.  Nothing here imports HTTP, the store or a component, so the
API server, the controllers, the scheduler and the kubelet all use it alike."""
