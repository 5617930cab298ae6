"""The controller manager's reconcile loops.

Each controller is one module with one class: its constructor registers
informer handlers that only put keys on its work queue; ``reconcile(key)``
converges one object from the informers' caches and writes through the
client; ``run()`` drives the workers. Controllers never import each other
and share only the informers (one list+watch per resource for all).
"""
