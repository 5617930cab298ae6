"""kubepy's client library: the only way components reach the API server.

Layers, each importing only those above it::

    config, errors      where the server is; typed API errors
    api.Client          async REST + watch over one aiohttp session
    informer            list+watch into an indexed Cache, with handlers
    workqueue           deduplicating, rate-limited keys and their workers
    events              EventRecorder: background, aggregated core/v1 Events
"""

from kubepy.client.api import Client
from kubepy.client.config import ClientConfig
from kubepy.client.errors import (
    AlreadyExistsError,
    APIStatusError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from kubepy.client.events import EventRecorder
from kubepy.client.informer import (
    Cache,
    Informer,
    by_namespace,
    by_node,
    by_owner,
    object_key,
)
from kubepy.client.workqueue import QueueShutdown, WorkQueue, run_workers

__all__ = [
    "APIStatusError",
    "AlreadyExistsError",
    "BadRequestError",
    "Cache",
    "Client",
    "ClientConfig",
    "ConflictError",
    "EventRecorder",
    "ForbiddenError",
    "GoneError",
    "Informer",
    "InvalidError",
    "NotFoundError",
    "QueueShutdown",
    "ServerError",
    "TransportError",
    "UnauthorizedError",
    "WorkQueue",
    "by_namespace",
    "by_node",
    "by_owner",
    "object_key",
    "run_workers",
]
