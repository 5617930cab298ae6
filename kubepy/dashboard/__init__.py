"""``kubepy dashboard``: the web dashboard, an add-on that talks only to the API server.

It holds no cluster credentials of its own for what users do: the browser
sends the user's bearer token with every request, and the dashboard's
backend forwards ``/api/...`` and ``/apis/...`` to the API server with that
token (``kubepy.dashboard.proxy``), so RBAC decides as for ``kubectl``. The
views are static ES modules (``static/``) served by ``kubepy.dashboard.server``;
no build step, no CDN.
"""
