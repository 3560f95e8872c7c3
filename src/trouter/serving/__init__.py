"""Serving a trained router: ``trouter.load()`` and the OpenAI-compatible routing proxy."""

from trouter.serving.api import (
    PoolMismatchError,
    RouteResult,
    RoutingRequestError,
    RoutingService,
    load,
)

__all__ = ["PoolMismatchError", "RouteResult", "RoutingRequestError", "RoutingService", "load"]
