"""The router protocol shared by every router, and the name registry.

A router is scikit-learn-like: ``fit(train, validation)`` learns from a
:class:`RoutingDataset`; ``predict(queries)`` returns per-model predicted performance and
normalised cost; ``route(queries, weights)`` picks, per query, the model with the highest
predicted utility. Hyper-parameters are constructor arguments; anything tuned is tuned
inside ``fit`` on the validation split only.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.encoders import LEGACY_ENCODER, check_encoder
from trouter.evaluation.scenarios import Weights

Queries = Sequence[str] | RoutingDataset
ROUTERS: dict[str, type[Router]] = {}


def register(name: str):
    """Class decorator: make a router available by ``name`` to the CLI and configs."""

    def wrap(cls: type[Router]) -> type[Router]:
        if name in ROUTERS:
            raise ValueError(f"router name {name!r} registered twice")
        cls.name = name
        ROUTERS[name] = cls
        return cls

    return wrap


def make_router(name: str, **params: Any) -> Router:
    import trouter.routers  # noqa: F401  (registers every built-in router)

    if name not in ROUTERS:
        raise KeyError(f"unknown router {name!r}; registered: {', '.join(sorted(ROUTERS))}")
    encoder = params.pop("encoder", None)
    router = ROUTERS[name](**params)
    if encoder is not None:
        router.params["encoder"] = check_encoder(encoder)
    return router


def query_texts(queries: Queries) -> list[str]:
    if isinstance(queries, RoutingDataset):
        return list(queries.texts)
    if isinstance(queries, str):
        raise TypeError("pass a list of queries, not a single string")
    return list(queries)


@dataclass
class Prediction:
    """Predicted performance in [0, 1] and normalised cost in [0, 1], shape (queries, models)."""

    models: list[str]
    performance: np.ndarray
    cost: np.ndarray

    def utility(self, weights: Weights) -> np.ndarray:
        return weights.utility(self.performance, self.cost)

    def choose(self, weights: Weights) -> np.ndarray:
        """Index of the highest-utility model per query (ties go to the cheaper model)."""
        utility = self.utility(weights) - 1e-9 * self.cost
        return np.argmax(utility, axis=1)


class Router(ABC):
    name: ClassVar[str] = "router"
    #: True for routers that read the true labels of the queries they route (the oracle).
    needs_labels: ClassVar[bool] = False
    #: True for routers whose prediction does not depend on the query text.
    query_independent: ClassVar[bool] = False
    #: The query encoder used when none is given (``encoder`` param, see trouter.encoders).
    default_encoder: ClassVar[str] = LEGACY_ENCODER

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.seed = seed
        self.params = {
            **params,
            "encoder": check_encoder(params.get("encoder", self.default_encoder)),
        }
        self.models_: list[str] | None = None

    @property
    def encoder(self) -> str:
        """The name of the query encoder this router is trained with and must serve with."""
        return self.params.get("encoder", LEGACY_ENCODER)

    # ----- protocol ----------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        """Learn from ``train``; tune on ``validation`` only."""

    @abstractmethod
    def predict(self, queries: Queries) -> Prediction:
        """Per-model predicted performance and normalised cost."""

    def route(self, queries: Queries, weights: Weights) -> list[str]:
        prediction = self.predict(queries)
        return [prediction.models[i] for i in prediction.choose(weights)]

    # ----- persistence -------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything ``fit`` learned; the default pickles the instance's attributes."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, directory: str | Path) -> Path:
        if self.models_ is None:
            raise RuntimeError(f"router {self.name!r} is not fitted; call fit() before save()")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "router": self.name,
            "seed": self.seed,
            "params": self.params,
            "models": self.models_,
        }
        with open(path / "state.pkl.tmp", "wb") as fh:
            pickle.dump(self.get_state(), fh)
        (path / "state.pkl.tmp").replace(path / "state.pkl")
        (path / "router.json").write_text(json.dumps(meta, indent=2))
        return path

    @staticmethod
    def load(directory: str | Path) -> Router:
        path = Path(directory)
        meta_file = path / "router.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a trained router directory (no router.json)")
        meta = json.loads(meta_file.read_text())
        params = {"encoder": LEGACY_ENCODER, **meta.get("params", {})}
        router = make_router(meta["router"], seed=meta.get("seed", 0), **params)
        with open(path / "state.pkl", "rb") as fh:
            router.set_state(pickle.load(fh))
        return router

    def _require_fitted(self) -> list[str]:
        if self.models_ is None:
            raise RuntimeError(f"router {self.name!r} is not fitted; call fit() first")
        return self.models_

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"seed": self.seed, **self.params}.items())
        return f"{type(self).__name__}({args})"
