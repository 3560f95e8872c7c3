"""Every built-in router, registered by name on import."""

from trouter.routers import (
    cluster,  # noqa: F401
    guard,  # noqa: F401
    knn,  # noqa: F401
    metric_router,  # noqa: F401
    mf,  # noqa: F401
    mlp,  # noqa: F401
    online,  # noqa: F401
    reference,  # noqa: F401
    trouter,  # noqa: F401
    trouter_plus,  # noqa: F401
)
from trouter.routers.base import ROUTERS, Prediction, Router, make_router, register

__all__ = ["ROUTERS", "Prediction", "Router", "make_router", "register"]
