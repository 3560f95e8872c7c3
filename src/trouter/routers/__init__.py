"""Every built-in router, registered by name on import."""

from trouter.routers import knn  # noqa: F401
from trouter.routers import metric_router  # noqa: F401
from trouter.routers import mf  # noqa: F401
from trouter.routers import mlp  # noqa: F401
from trouter.routers import reference  # noqa: F401
from trouter.routers import trouter  # noqa: F401
from trouter.routers.base import ROUTERS, Prediction, Router, make_router, register

__all__ = ["ROUTERS", "Prediction", "Router", "make_router", "register"]
