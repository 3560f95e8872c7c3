"""The router protocol shared by every router, and the name registry.

A router is scikit-learn-like: ``fit(train, validation)`` learns from a
:class:`RoutingDataset`; ``predict(queries)`` returns per-model predicted performance and
normalised cost; ``route(queries, weights)`` picks, per query, the model with the highest
predicted utility. Hyper-parameters are constructor arguments; anything tuned is tuned
inside ``fit`` on the validation split only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.encoders import LEGACY_ENCODER, EncoderError, check_encoder
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


#: The reason given when the predicted utility decides.
UTILITY_REASON = "highest predicted utility"


@dataclass(frozen=True)
class Forced:
    """A router's own choice per query, and why: ``index`` points into the prediction's
    ``override_models`` (-1 = the predicted utility decides); ``reasons`` has one entry per
    query (ignored where ``index`` is -1)."""

    index: np.ndarray
    reasons: Sequence[str]

    def take(self, rows: np.ndarray) -> Forced:
        return Forced(self.index[rows], [self.reasons[i] for i in np.atleast_1d(rows)])


@dataclass(frozen=True)
class Decision:
    """The chosen column per query (into ``Prediction.models``) and the reason for each."""

    choice: np.ndarray
    reasons: list[str]


@dataclass
class Prediction:
    """Predicted performance in [0, 1] and normalised cost in [0, 1], shape (queries, models).

    ``override`` (optional) maps weights to a :class:`Forced` choice per query. Guarded
    routers use it, because whether the learned predictions may be trusted in a cell depends
    on the weights. The predicted numbers stay the router's real predictions; :func:`decide`
    applies the override and names it as the reason. ``extras`` (optional) is what a router
    wants kept with each decision (the online router: its prior and cell); its arrays have
    one row per query and are sliced with the prediction.
    """

    models: list[str]
    performance: np.ndarray
    cost: np.ndarray
    override: Callable[[Weights], Forced] | None = field(default=None, repr=False)
    override_models: list[str] | None = None
    _forced: dict[tuple[float, float], Forced] = field(
        default_factory=dict, repr=False, compare=False
    )
    extras: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def utility(self, weights: Weights) -> np.ndarray:
        """Predicted utility per query and model (the override plays no part in it)."""
        return weights.utility(self.performance, self.cost)

    def forced(self, weights: Weights) -> Forced | None:
        """The override's choice for ``weights``, computed once per weights."""
        if self.override is None:
            return None
        key = (float(weights.performance), float(weights.cost))
        if key not in self._forced:
            self._forced[key] = self.override(weights)
        return self._forced[key]

    def reorder(self, names: Sequence[str]) -> Prediction:
        """The same prediction with its columns in the order of ``names`` (a subset of the
        models is allowed; the override keeps pointing at its own model list)."""
        if list(names) == self.models:
            return self
        missing = [name for name in names if name not in self.models]
        if missing:
            raise ValueError(f"the prediction has no scores for models {missing}")
        cols = [self.models.index(name) for name in names]
        has_override = self.override is not None
        return Prediction(
            list(names),
            np.asarray(self.performance)[:, cols],
            np.asarray(self.cost)[:, cols],
            self.forced if has_override else None,
            (self.override_models or list(self.models)) if has_override else None,
            extras=self.extras,
        )

    def rows(self, index: int | slice | np.ndarray) -> Prediction:
        """The prediction of some queries only (the override is sliced alike)."""
        rows = np.arange(len(self.performance))[index]
        rows = np.atleast_1d(rows)
        override = None
        if self.override is not None:

            def override(weights: Weights, parent: Prediction = self) -> Forced:
                return parent.forced(weights).take(rows)

        return Prediction(
            list(self.models),
            np.asarray(self.performance)[rows],
            np.asarray(self.cost)[rows],
            override,
            self.override_models,
            extras=take_extras(self.extras, rows),
        )

    def choose(self, weights: Weights) -> np.ndarray:
        """Index of the chosen model per query: :func:`decide`'s choice."""
        return decide(self, weights).choice


def take_extras(extras: dict[str, Any] | None, index) -> dict[str, Any] | None:
    """Some queries' part of a prediction's ``extras``: its arrays (one row per query)
    indexed by ``index`` (an int gives one query's row), anything else as it is."""
    if extras is None:
        return None
    return {k: v[index] if isinstance(v, np.ndarray) else v for k, v in extras.items()}


def decide(prediction: Prediction, weights: Weights, allowed: np.ndarray | None = None) -> Decision:
    """The one routing decision: evaluation, ``trouter route``, the Python API and the proxy
    all choose through it.

    Per query, the router's override where it gives one (and the forced model is present and
    ``allowed``), else the highest predicted utility among the ``allowed`` models (ties go to
    the cheaper model). A model whose predicted utility is not finite (NaN: nothing was ever
    observed for it) is never chosen; a query left with no candidate is a ValueError.
    """
    perf, cost = np.asarray(prediction.performance), np.asarray(prediction.cost)
    nan_cost = np.isnan(cost)
    # ties go to the cheaper model (np.nan_to_num costs more than routing one query)
    utility = weights.utility(perf, cost) - 1e-9 * (np.where(nan_cost, 0.0, cost)
                                                   if nan_cost.any() else cost)  # fmt: skip
    known = np.isfinite(utility)
    if allowed is not None:
        known &= allowed
    n = len(utility)
    choice = np.argmax(np.where(known, utility, -np.inf), axis=1) if n else np.zeros(0, int)
    reasons = [UTILITY_REASON] * n
    settled = np.zeros(n, dtype=bool)
    forced = prediction.forced(weights)
    if forced is not None and n:
        names = prediction.override_models or prediction.models
        column = {name: j for j, name in enumerate(prediction.models)}
        to_column = np.array([column.get(name, -1) for name in names] + [-1])
        index = np.asarray(forced.index, dtype=int)
        cols = to_column[np.where(index >= 0, index, -1)]
        settled = cols >= 0
        if allowed is not None:
            settled &= allowed[np.arange(n), np.maximum(cols, 0)]
        choice = np.where(settled, cols, choice)
        reasons = [forced.reasons[i] if ok else UTILITY_REASON for i, ok in
                   enumerate(settled.tolist())]  # fmt: skip
    empty = ~settled & ~known.any(axis=1) if n else settled
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        if allowed is not None and np.isfinite(utility[row]).any():
            raise ValueError(f"no allowed model for query {row}")
        raise ValueError(
            f"no model has a finite predicted utility for query {row} (predicted "
            f"performance {perf[row].tolist()}); the router has no usable "
            "prediction for it"
        )
    return Decision(choice, reasons)


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
        return [prediction.models[i] for i in decide(prediction, weights).choice]

    # ----- persistence (see trouter.routers.persistence: safetensors + JSON, no pickle) ----
    def get_state(self) -> dict[str, Any]:
        """Everything ``fit`` learned: numpy arrays, torch tensors and JSON values, nested in
        dicts and lists. The default takes the public attributes ending in ``_`` (the
        scikit-learn convention for fitted attributes); seed and hyper-parameters are saved
        apart and passed to the constructor on load."""
        return {k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("_")}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, directory: str | Path) -> Path:
        from trouter.routers.persistence import write_router_dir

        models = self._require_fitted()
        meta = {
            "router": self.name,
            "seed": self.seed,
            "params": self.params,
            "encoder": self.encoder,
            "models": list(models),
        }
        return write_router_dir(Path(directory), meta, self.get_state())

    @staticmethod
    def load(directory: str | Path) -> Router:
        """A saved router; a missing, damaged or foreign file raises RouterFileError naming it."""
        from trouter.routers.persistence import (
            META_FILE,
            RouterFileError,
            check_routes,
            read_meta,
            read_state,
        )

        path = Path(directory)
        meta = read_meta(path)
        params = dict(meta.get("params", {}))
        # The encoder is recorded twice (params and top level); a router saved before it was
        # recorded was trained with MiniLM.
        recorded = meta.get("encoder", params.get("encoder", LEGACY_ENCODER))
        if params.setdefault("encoder", recorded) != recorded:
            raise RouterFileError(
                f"{path / META_FILE}: records encoder {recorded!r} but its parameters say "
                f"{params['encoder']!r}"
            )
        try:
            router = make_router(meta["router"], seed=meta.get("seed", 0), **params)
        except KeyError as err:
            raise RouterFileError(f"{path / META_FILE}: {err.args[0]}") from None
        except EncoderError as err:
            raise RouterFileError(f"{path / META_FILE}: {err}") from None
        except (TypeError, ValueError) as err:
            raise RouterFileError(
                f"{path / META_FILE}: parameters do not fit router {meta['router']!r}: {err}"
            ) from None
        state = read_state(path, meta)
        try:
            router.set_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise RouterFileError(
                f"{path}: the saved state does not fit router {meta['router']!r} "
                f"({type(err).__name__}: {err})"
            ) from None
        if router.models_ != meta["models"]:
            raise RouterFileError(
                f"{path / META_FILE}: lists models {meta['models']} but the state holds "
                f"{router.models_}"
            )
        check_routes(router, path)  # wrong array shapes are refused here, not at first route
        return router

    def _require_fitted(self) -> list[str]:
        if self.models_ is None:
            raise RuntimeError(f"router {self.name!r} is not fitted; call fit() first")
        return self.models_

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"seed": self.seed, **self.params}.items())
        return f"{type(self).__name__}({args})"
