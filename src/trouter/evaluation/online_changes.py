"""Change scenarios of the online replay: drift and a new pool model at stream query ``T``.

``--change`` takes one of

* ``score-drop[:MODEL]@T``: from stream query ``T`` on, MODEL's scores fall by 0.2 (clipped
  at 0); MODEL defaults to the model best-single serves on the stream;
* ``price-drop[:MODEL]@T``: from ``T`` on, MODEL's price (raw and normalised cost) is a tenth;
  MODEL defaults to the stream's most expensive model (mean normalised cost);
* ``new-model[:MODEL]@T``: MODEL is absent before ``T`` and joins the pool at ``T``; without
  MODEL, one run per pool model in turn (``--change-models N``: the first N by name,
  case-insensitive).

A :class:`World` is the stream as every policy lives it: the changed matrix (used for
serving, feedback, labels and for scoring every router) and which models are available at
each query. No change is the stationary world, through the same code path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, decide

KINDS = ("score-drop", "price-drop", "new-model")
SCORE_DROP = 0.2
PRICE_FACTOR = 0.1
_SPEC = re.compile(r"^(?P<kind>[a-z-]+)(?::(?P<model>[^@]+))?@(?P<at>\d+)$")


@dataclass(frozen=True)
class Change:
    """One change at stream query ``at`` (``model`` None: the scenario's default model)."""

    kind: str
    at: int
    model: str | None = None

    @property
    def spec(self) -> str:
        model = f":{self.model}" if self.model else ""
        return f"{self.kind}{model}@{self.at}"


def parse_change(spec: str | None) -> Change | None:
    """``score-drop@400``, ``price-drop:gpt-4@400``, ``new-model@300`` -> :class:`Change`
    (None or empty: the stationary stream); anything else is a ValueError."""
    if not spec or spec == "none":
        return None
    match = _SPEC.match(spec.strip())
    if match is None or match["kind"] not in KINDS:
        raise ValueError(
            f"{spec!r} is not a change; give KIND[:MODEL]@T with KIND one of {', '.join(KINDS)} "
            "and T the stream query (0-based) it happens at, e.g. score-drop@400, "
            "price-drop:gpt-4-1106-preview@400 or new-model@300"
        )
    return Change(match["kind"], int(match["at"]), match["model"])


def check_models(change: Change | None, models: list[str]) -> None:
    """A named model must be in the pool (ValueError naming the pool otherwise)."""
    if change is not None and change.model is not None and change.model not in models:
        raise ValueError(
            f"--change names {change.model!r}, which is not a pool model; pool: {', '.join(models)}"
        )


def without_model(dataset: RoutingDataset | None, name: str) -> RoutingDataset | None:
    """``dataset`` without model ``name``, normalised cost kept on the full pool's scale (the
    newcomer's price is known, and the stream's events carry costs on that scale)."""
    if dataset is None:
        return None
    keep = [j for j, model in enumerate(dataset.model_names) if model != name]
    return replace(
        dataset,
        models=[dataset.models[j] for j in keep],
        performance=dataset.performance[:, keep],
        cost=dataset.cost[:, keep],
        normalised_cost=dataset.normalised_cost[:, keep],
    )


class World:
    """The stream as lived: ``stream`` holds the changed matrix (NaN where a model is absent)
    and ``available[row]`` the models a policy may serve for that row."""

    def __init__(self, stream: RoutingDataset, order: np.ndarray, change: Change | None, model):
        self.change, self.model = change, model
        n, m = len(stream), len(stream.models)
        position = np.full(n, np.iinfo(np.int64).max)
        position[order] = np.arange(len(order))
        self.at = None if change is None else change.at
        self.after = position >= self.at if change is not None else np.zeros(n, bool)
        self.available = np.ones((n, m), bool)
        self.j = None if model is None else stream.model_names.index(model)
        perf, usd, cost = stream.performance, stream.cost, stream.normalised_cost
        if change is not None:
            perf, usd, cost = perf.copy(), usd.copy(), cost.copy()
            rows, j = self.after, self.j
            if change.kind == "score-drop":
                perf[rows, j] = np.clip(perf[rows, j] - SCORE_DROP, 0.0, None)
            elif change.kind == "price-drop":
                usd[rows, j] *= PRICE_FACTOR
                cost[rows, j] *= PRICE_FACTOR
            else:
                self.available[~rows, j] = False
                for array in (perf, usd, cost):
                    array[~rows, j] = np.nan
        self.stream = replace(stream, performance=perf, cost=usd, normalised_cost=cost)

    @property
    def arrival(self) -> int | None:
        """The stream query where a new model joins (None: none joins)."""
        return self.at if self.change is not None and self.change.kind == "new-model" else None

    @property
    def arrival_event(self) -> tuple[int, int] | None:
        """(query, model index) of a new model's arrival, for :func:`~online.replay`."""
        return None if self.arrival is None else (self.arrival, self.j)

    @property
    def initial(self) -> np.ndarray:
        """The models available at the start of the stream (a mask over the pool)."""
        mask = np.ones(self.available.shape[1], bool)
        if self.arrival is not None:
            mask[self.j] = False
        return mask

    def utility(self, weights: Weights) -> np.ndarray:
        """Utility per (row, model) on the changed matrix; -inf where a model is absent."""
        s = self.stream
        utility = weights.utility(s.performance, s.normalised_cost)
        return np.where(self.available, utility, -np.inf) if self.arrival is not None else utility

    def hindsight(self, prediction: Prediction) -> Prediction:
        """``prediction`` as it would read knowing the change (for the in-hindsight skyline)."""
        if self.change is None or self.change.kind == "new-model":
            return prediction
        perf, cost = np.array(prediction.performance), np.array(prediction.cost)
        rows, j = self.after, self.j
        if self.change.kind == "score-drop":
            perf[rows, j] = np.clip(perf[rows, j] - SCORE_DROP, 0.0, None)
        else:
            cost[rows, j] *= PRICE_FACTOR
        return Prediction(list(prediction.models), perf, cost)

    def choose(self, prediction: Prediction, weights: Weights, allowed=None) -> np.ndarray:
        """The prediction's choice among the available models (every model: ``choose``)."""
        mask = self.available if allowed is None else allowed
        if mask.all():
            return prediction.choose(weights)
        return decide(prediction, weights, np.broadcast_to(mask, self.available.shape)).choice

    def random(self, seed: int) -> np.ndarray:
        """A uniformly random available model per row."""
        n, m = self.available.shape
        picks = np.random.default_rng([seed, 23]).integers(m, size=n)
        if self.arrival is None:
            return picks
        absent = ~self.available[np.arange(n), picks]
        others = np.flatnonzero(self.initial)
        redraw = np.random.default_rng([seed, 29]).integers(len(others), size=int(absent.sum()))
        picks[absent] = others[redraw]
        return picks


def default_model(change: Change, stream: RoutingDataset, best_single: np.ndarray) -> str:
    """The changed model when ``change`` names none: best-single's (score-drop), the most
    expensive (price-drop)."""
    if change.model is not None:
        return change.model
    if change.kind == "score-drop":
        return stream.model_names[int(np.bincount(best_single).argmax())]
    if change.kind == "price-drop":
        return stream.model_names[int(np.nanmean(stream.normalised_cost, axis=0).argmax())]
    raise ValueError("a new-model change without a model runs once per pool model")


def arriving_models(change: Change | None, models: list[str], limit: int | None) -> list:
    """The models that arrive in turn (one run each); [None] for the other scenarios."""
    if change is None or change.kind != "new-model":
        return [None]
    if change.model is not None:
        return [change.model]
    names = sorted(models, key=str.lower)
    return names[:limit] if limit else names


class ArrivingModel:
    """An online router's policy whose router lacks the new model until it arrives: indices
    and event arrays are mapped between the router's pool and the stream's."""

    def __init__(self, inner, stream_models: list[str], name: str, cost: float) -> None:
        self.inner, self.name, self.cost = inner, name, float(cost)
        self.stream_models = stream_models
        self.to_stream = np.array([stream_models.index(n) for n in inner.router.models_])

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        model, propensity, explored, priority = self.inner.choose(t, row)
        return int(self.to_stream[model]), propensity, explored, priority

    def label_requested(self) -> None:
        self.inner.label_requested()

    @property
    def label_targets(self) -> np.ndarray | None:
        """The inner policy's label targets, over the stream's models (absent ones: False)."""
        inner = self.inner.label_targets
        if inner is None:
            return None
        out = np.zeros(len(self.stream_models), dtype=bool)
        out[self.to_stream] = inner
        return out

    def learn(self, events: list[dict]) -> None:
        index = {int(j): i for i, j in enumerate(self.to_stream)}
        mapped = []
        for event in events:
            if event["kind"] == "label":
                event = {**event, "scores": event["scores"][self.to_stream],
                         "costs": event["costs"][self.to_stream]}  # fmt: skip
            elif int(event["model"]) in index:
                event = {**event, "model": index[int(event["model"])]}
            else:
                continue
            mapped.append(event)
        self.inner.learn(mapped)

    def add_model(self, j: int) -> None:
        """The model joins: the router's ``add_model`` and its price-prior feature column."""
        router = self.inner.router
        router.add_model(self.name, self.cost)
        perf_prior, cost_prior = router.price_prior()
        features = dict(self.inner.features)  # shared with other policies: never mutated
        n = len(features["cell"])
        features["performance"] = np.hstack(
            [features["performance"], np.full((n, 1), perf_prior[-1])]
        )
        features["cost"] = np.hstack([features["cost"], np.full((n, 1), cost_prior[-1])])
        self.inner.features = features
        self.to_stream = np.append(self.to_stream, j)


__all__ = ["Change", "World", "parse_change"]
