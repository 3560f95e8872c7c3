"""Served feedback per model, recent against long-run: a signal that a model got worse.

A provider may change a model behind its name, and the online router re-judges it only
as fast as its label budget allows. The learner feeds every new served event here. Per
model it keeps two exponentially weighted means: a recent one (half-life ``recent``
events) and a long-run one (half-life ``long`` events), of the score and of the
*residual*, the score minus the router's prior prediction for that query, so that
routing other queries to a model does not read as a change in the model. Exported as
gauges, for a dashboard or an alert:

* ``trouter_served_score{model, window="recent"|"long"}``: the mean served score;
* ``trouter_served_score_drop{model}``: the long-run residual minus the recent one (> 0:
  the model scores worse than it used to, for the same kind of queries), 0 until the
  recent window holds :data:`MIN_RECENT` events.

A drop above ``warn_drop`` and three standard errors is logged once per model (again
after it recovers). A lasting change is absorbed by the long-run mean within a few of its
half-lives, and the drop fades: this flags a change, it does not track a level. Every
process folds every process's events, so each exports the fleet's figures.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger("trouter.serving")

#: Events the recent window needs before a drop is reported.
MIN_RECENT = 30


@dataclass
class _Mean:
    """An exponentially weighted mean and second moment (weights halve every ``half_life``)."""

    half_life: float
    weight: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        keep = 0.5 ** (1.0 / self.half_life)
        self.weight = keep * self.weight + 1.0
        self.total = keep * self.total + value
        self.squares = keep * self.squares + value * value

    @property
    def mean(self) -> float:
        return self.total / self.weight if self.weight else math.nan

    @property
    def stderr(self) -> float:
        if self.weight <= 1:
            return math.inf
        variance = max(self.squares / self.weight - self.mean**2, 0.0)
        return math.sqrt(variance / self.weight)


@dataclass
class _Model:
    recent: float
    long: float
    score: dict[str, _Mean] = field(default_factory=dict)
    residual: dict[str, _Mean] = field(default_factory=dict)
    events: int = 0
    warned: bool = False

    def __post_init__(self) -> None:
        for window, half_life in (("recent", self.recent), ("long", self.long)):
            self.score[window] = _Mean(half_life)
            self.residual[window] = _Mean(half_life)


class ScoreWatch:
    """Recent and long-run served scores per model (see module)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        recent: float = 100.0,
        long: float = 2000.0,
        warn_drop: float = 0.05,
    ) -> None:
        if not 0 < recent < long:
            raise ValueError(f"need 0 < recent < long half-lives, got {recent} and {long}")
        self.recent, self.long, self.warn_drop = float(recent), float(long), float(warn_drop)
        self.models: dict[str, _Model] = {}
        r = registry or CollectorRegistry()
        self.score_gauge = Gauge(
            "trouter_served_score",
            "Mean feedback score of each served model, recent and long-run (exponentially "
            "weighted; half-lives in events).",
            ["model", "window"],
            registry=r,
        )
        self.drop_gauge = Gauge(
            "trouter_served_score_drop",
            "Long-run minus recent mean of (feedback score - the router's prediction) per "
            "served model; above 0 the model scores worse than it used to.",
            ["model"],
            registry=r,
        )

    def update(self, events: list[dict[str, Any]], models: list[str]) -> None:
        """Fold served events (``model``: a name in ``models``, the router's; ``score``;
        ``prior_performance`` in ``models``' order) in arrival order."""
        index = {name: j for j, name in enumerate(models)}
        touched = set()
        for event in events:
            j = index.get(event.get("model"))
            score = event.get("score")
            if j is None or score is None or not math.isfinite(score):
                continue
            prior = event.get("prior_performance") or []
            predicted = prior[j] if j < len(prior) else math.nan
            residual = score - predicted if predicted is not None else math.nan
            state = self.models.setdefault(event["model"], _Model(self.recent, self.long))
            state.events += 1
            for window in ("recent", "long"):
                state.score[window].add(score)
                if math.isfinite(residual):
                    state.residual[window].add(residual)
            touched.add(event["model"])
        for name in touched:
            self._export(name, self.models[name])

    def drop(self, name: str) -> float:
        """Long-run minus recent residual mean of ``name`` (0 before :data:`MIN_RECENT`)."""
        state = self.models.get(name)
        if state is None or state.events < MIN_RECENT:
            return 0.0
        recent, long = state.residual["recent"], state.residual["long"]
        if not recent.weight or not long.weight:
            return 0.0
        return long.mean - recent.mean

    def _export(self, name: str, state: _Model) -> None:
        for window in ("recent", "long"):
            self.score_gauge.labels(model=name, window=window).set(state.score[window].mean)
        drop = self.drop(name)
        self.drop_gauge.labels(model=name).set(drop)
        significant = drop > max(self.warn_drop, 3.0 * state.residual["recent"].stderr)
        if significant and not state.warned:
            log.warning(
                "served feedback for %s has fallen: its recent scores are %.3f below what it "
                "scored before on the same kind of queries (mean score now %.3f, long-run "
                "%.3f); the online router re-judges it as its labels and tests allow",
                name, drop, state.score["recent"].mean, state.score["long"].mean,
            )  # fmt: skip
        state.warned = significant or (state.warned and drop > self.warn_drop / 2)
