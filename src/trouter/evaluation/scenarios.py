"""Routing preferences: how much a unit of performance is worth against a unit of cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Weights:
    """Utility U = performance * w_perf + normalised_cost * w_cost (w_cost is usually < 0)."""

    performance: float
    cost: float

    def utility(self, performance: np.ndarray, cost: np.ndarray) -> np.ndarray:
        return self.performance * performance + self.cost * cost

    @classmethod
    def from_cost_share(cls, share: float) -> Weights:
        """A point on the sweep: share in [0, 1] of the weight that goes to (saving) cost."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"cost share must be in [0, 1], got {share}")
        return cls(performance=1.0 - share, cost=-share)


SCENARIOS: dict[str, Weights] = {
    "performance-first": Weights(performance=0.8, cost=-0.2),
    "balanced": Weights(performance=0.5, cost=-0.5),
    "cost-first": Weights(performance=0.2, cost=-0.8),
}


def resolve_scenarios(spec: str) -> dict[str, Weights]:
    """Parse ``all``, a comma list of scenario names, or ``perf:cost`` weight pairs."""
    if spec == "all":
        return dict(SCENARIOS)
    chosen: dict[str, Weights] = {}
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item in SCENARIOS:
            chosen[item] = SCENARIOS[item]
        elif ":" in item:
            perf, cost = item.split(":", 1)
            try:
                chosen[item] = Weights(performance=float(perf), cost=float(cost))
            except ValueError as err:
                raise ValueError(f"bad weight pair {item!r}; expected e.g. 0.7:-0.3") from err
        else:
            raise ValueError(
                f"unknown scenario {item!r}; choose from {', '.join(SCENARIOS)}, 'all', "
                "or a perf:cost pair such as 0.7:-0.3"
            )
    if not chosen:
        raise ValueError("no scenario given")
    return chosen
